"""``harness_pool.v1.WorkerRegistry``: the stream each pooled worker holds for its life.

Served on the sidecar's internal worker port only. The first event must be a
Hello carrying the secret the sidecar handed to the process it spawned for
that pool id; it must arrive within ``first_message_timeout`` or the call is
cancelled (a client that opens the stream and never sends holds no thread for
longer). An unknown id or a wrong secret gets PERMISSION_DENIED and nothing
else.

One handler thread per attached worker yields from the worker's mailbox (its
one assignment, then the release marker); one reader thread per attached
worker feeds the worker's events (Ready, StartFailed, Finished) to the pool.
Either side ending the stream releases the other.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from harness_pool._grpc import Watchdog, abort, header
from harness_pool.pool.core import PoolError, PoolId
from harness_pool.pool.pool import Pool
from harness_pool.v1 import pool_pb2, pool_pb2_grpc


class WorkerRegistryServicer(pool_pb2_grpc.WorkerRegistryServicer):
    def __init__(self, pool: Pool, watchdog: Watchdog, first_message_timeout: float) -> None:
        self.pool = pool
        self.watchdog = watchdog
        self.first_message_timeout = first_message_timeout

    def Attach(
        self, request_iterator: Iterator[pool_pb2.WorkerEvent], context: grpc.ServicerContext
    ) -> Iterator[pool_pb2.Assignment]:
        wid = header(context)
        if not wid:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "WorkerRegistry.Attach: missing 'worker_id' metadata header")
        pool_id = PoolId(wid)  # type: ignore[arg-type]
        first = self.watchdog.first(request_iterator, context, self.first_message_timeout)
        if first is None:
            return  # closed, or no Hello in time (the watchdog cancelled the call)
        if first.WhichOneof("event") != "hello":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"worker {pool_id}: the first event on Attach must be hello")
        try:
            box = self.pool.attach(pool_id, first.hello.pid, first.hello.token,
                                   first.hello.warm_seconds)
        except PoolError as exc:
            abort(context, exc)

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
