"""``harness_pool.v1.PoolAdmin``: status for everyone, worker recycling for operators.

``GetStatus`` is read-only and served on the main port (``harness-pool
status``). ``RecycleWorker`` stops a worker, so it is served only on the admin
address (``--admin-address``, best a Unix socket in a directory only the
sidecar's container mounts); on every other listener it answers
PERMISSION_DENIED, so a job's harness in the same pod cannot stop workers
(see docs/security.md).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from harness_pool._grpc import abort
from harness_pool.pool.core import PoolError
from harness_pool.sidecar.health import LIVENESS_SERVICE, READINESS_SERVICES
from harness_pool.v1 import pool_pb2, pool_pb2_grpc

__all__ = ["LIVENESS_SERVICE", "READINESS_SERVICES", "PoolAdminServicer"]


class PoolAdminServicer(pool_pb2_grpc.PoolAdminServicer):
    def __init__(self, status: Callable[[], pool_pb2.PoolStatus],
                 recycle: Callable[[str], None], allow_recycle: bool) -> None:
        self._status = status
        self._recycle = recycle
        self._allow_recycle = allow_recycle

    def GetStatus(self, request: pool_pb2.GetStatusRequest,
                  context: grpc.ServicerContext) -> pool_pb2.PoolStatus:
        return self._status()

    def RecycleWorker(self, request: pool_pb2.RecycleWorkerRequest,
                      context: grpc.ServicerContext) -> pool_pb2.RecycleWorkerResponse:
        if not self._allow_recycle:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          "RecycleWorker is served only on the sidecar's admin address "
                          "(--admin-address), not on this port")
        if not request.pool_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "RecycleWorker: pool_id is empty")
        try:
            self._recycle(request.pool_id)
        except PoolError as exc:
            abort(context, exc)
        return pool_pb2.RecycleWorkerResponse()
