"""``harness_pool.v1.WorkerRegistry``: the stream each pooled worker holds for its life.

One handler thread per attached worker yields from the worker's mailbox (its one
assignment, then the release marker); one reader thread per worker feeds the
worker's events (Ready, StartFailed, Finished) to the pool. Either side ending
the stream releases the other.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from harness_pool.pool.core import PoolError, PoolId
from harness_pool.pool.pool import Pool
from harness_pool.sidecar._grpc import require_worker_id, status_of
from harness_pool.v1 import pool_pb2, pool_pb2_grpc


class WorkerRegistryServicer(pool_pb2_grpc.WorkerRegistryServicer):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def Attach(
        self, request_iterator: Iterator[pool_pb2.WorkerEvent], context: grpc.ServicerContext
    ) -> Iterator[pool_pb2.Assignment]:
        pool_id = PoolId(require_worker_id(context, "WorkerRegistry.Attach"))
        try:
            first = next(request_iterator)
        except (StopIteration, grpc.RpcError):
            return
        if first.WhichOneof("event") != "hello":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"worker {pool_id}: the first event on Attach must be hello")
        try:
            box = self.pool.attach(pool_id, first.hello.pid, first.hello.warm_seconds)
        except PoolError as exc:
            context.abort(status_of(exc), str(exc))

        def read_events() -> None:
            try:
                for event in request_iterator:
                    self.pool.worker_event(pool_id, event)
            except grpc.RpcError:
                pass
            finally:
                self.pool.detached(pool_id)
                box.put(self.pool.release_marker)

        context.add_callback(lambda: box.put(self.pool.release_marker))
        threading.Thread(target=read_events, name=f"hp-attach-{pool_id}", daemon=True).start()
        while True:
            item = box.get()
            if self.pool.is_release(item):
                return
            yield item  # type: ignore[misc]
