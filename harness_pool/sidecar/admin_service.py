"""``harness_pool.v1.PoolAdmin`` and the gRPC health service of the sidecar.

Health (``grpc.health.v1.Health``): the service name ``""`` (and
``BeamFnExternalWorkerPool``) is the *readiness* signal, SERVING while at
least one worker (pooled or external) can take a stage; ``liveness`` is
SERVING while the sidecar runs and not shutting down. Kubernetes ``grpc:``
probes use ``service: ""`` for readiness and ``service: liveness`` for liveness.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2

from harness_pool.pool.core import PoolError
from harness_pool.sidecar._grpc import status_of
from harness_pool.v1 import pool_pb2, pool_pb2_grpc

READINESS_SERVICES = ("", "org.apache.beam.model.fn_execution.v1.BeamFnExternalWorkerPool")
LIVENESS_SERVICE = "liveness"


class Health:
    """Keeps the health servicer in step with whether a worker can take a stage."""

    def __init__(self, can_serve: Callable[[], bool]) -> None:
        self.servicer = health.HealthServicer()
        self._can_serve = can_serve
        self._shutting_down = False
        self._last: bool | None = None
        self.servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self.refresh()

    def refresh(self) -> None:
        ready = not self._shutting_down and self._can_serve()
        if ready == self._last:
            return
        self._last = ready
        status = (health_pb2.HealthCheckResponse.SERVING if ready
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in READINESS_SERVICES:
            self.servicer.set(name, status)

    def shutting_down(self) -> None:
        self._shutting_down = True
        self.servicer.enter_graceful_shutdown()


class PoolAdminServicer(pool_pb2_grpc.PoolAdminServicer):
    def __init__(self, status: Callable[[], pool_pb2.PoolStatus],
                 recycle: Callable[[str], None]) -> None:
        self._status = status
        self._recycle = recycle

    def GetStatus(self, request: pool_pb2.GetStatusRequest,
                  context: grpc.ServicerContext) -> pool_pb2.PoolStatus:
        return self._status()

    def RecycleWorker(self, request: pool_pb2.RecycleWorkerRequest,
                      context: grpc.ServicerContext) -> pool_pb2.RecycleWorkerResponse:
        if not request.pool_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "RecycleWorker: pool_id is empty")
        try:
            self._recycle(request.pool_id)
        except PoolError as exc:
            code = status_of(exc)
            context.abort(grpc.StatusCode.NOT_FOUND if code is grpc.StatusCode.FAILED_PRECONDITION
                          else code, str(exc))
        return pool_pb2.RecycleWorkerResponse()
