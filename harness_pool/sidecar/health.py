"""gRPC health (``grpc.health.v1.Health``) of the sidecar: readiness and liveness.

Service names: ``""`` (and ``BeamFnExternalWorkerPool``) is *readiness*,
SERVING while a worker (pooled or external) can take a stage now; ``liveness``
is SERVING while the sidecar is not shutting down and its supervisor loop
still completes passes (a wedged pool fails liveness, so the kubelet restarts
it). Kubernetes ``grpc:`` probes use ``service: ""`` and ``service: liveness``.

Why not ``grpc_health``'s servicer: it sends Watch updates from inside
``set()`` while holding its lock, so one client that opens ``Watch`` and never
reads (HTTP/2 window kept at 0) blocks ``set()`` and every ``Check`` behind it:
the pool's readiness updates and the kubelet's probes. Here:

- ``Check`` and ``set`` only touch a dict under a short lock: never blocked by
  a watcher;
- each ``Watch`` runs in its own handler thread, sends only the latest status
  (no queue grows), and is cancelled by the watchdog when one send stays
  pending for ``send_timeout``;
- at most ``max_watchers`` Watch calls at once (more: RESOURCE_EXHAUSTED), so
  Watch can never take every thread a listener has for Check.

Lock order: ``Readiness._lock`` → (the pool's and proxy's locks inside
``can_serve``) → ``HealthServicer._cond``. Nothing blocks while holding
``HealthServicer._cond`` except its own condition wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness_pool._errors import printable
from harness_pool._grpc import Watchdog

READINESS_SERVICES = ("", "org.apache.beam.model.fn_execution.v1.BeamFnExternalWorkerPool")
LIVENESS_SERVICE = "liveness"

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self, watchdog: Watchdog, alive: Callable[[], bool],
                 max_watchers: int = 4, send_timeout: float = 10.0) -> None:
        self._watchdog = watchdog
        self._alive = alive
        self.max_watchers = max_watchers
        self.send_timeout = send_timeout
        self._cond = threading.Condition()
        self._status: dict[str, int] = {name: NOT_SERVING for name in READINESS_SERVICES}
        self._version = 0
        self._watchers = 0
        self._shutting_down = False

    # -- the sidecar's side ------------------------------------------------------

    def set(self, services: tuple[str, ...], status: int) -> None:
        with self._cond:
            if self._shutting_down:
                return
            for name in services:
                self._status[name] = status
            self._version += 1
            self._cond.notify_all()

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING from now on; later ``set`` calls are ignored."""
        with self._cond:
            self._shutting_down = True
            for name in self._status:
                self._status[name] = NOT_SERVING
            self._version += 1
            self._cond.notify_all()

    def status(self, service: str) -> int | None:
        if service == LIVENESS_SERVICE:
            with self._cond:
                down = self._shutting_down
            return NOT_SERVING if down or not self._alive() else SERVING
        with self._cond:
            return self._status.get(service)

    # -- gRPC ---------------------------------------------------------------------

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
              ) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"health: unknown service '{printable(request.service)}'")
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
              ) -> Iterator[health_pb2.HealthCheckResponse]:
        with self._cond:
            if self._watchers >= self.max_watchers:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"health: {self._watchers} Watch calls already open (at most "
                              f"{self.max_watchers}); use Check")
            self._watchers += 1
        try:
            sent: int | None = None
            while context.is_active():
                with self._cond:
                    seen = self._version
                status = self.status(request.service)
                current = SERVICE_UNKNOWN if status is None else status
                if current != sent:
                    ticket = self._watchdog.arm(context, self.send_timeout)
                    yield health_pb2.HealthCheckResponse(status=current)
                    if not self._watchdog.disarm(ticket):
                        return  # the send stayed pending: the watchdog cancelled the call
                    sent = current
                with self._cond:
                    if self._version == seen:
                        # Liveness is computed, not set: look again at least every second.
                        self._cond.wait(1.0)
        finally:
            with self._cond:
                self._watchers -= 1


class Readiness:
    """Keeps readiness in step with whether a worker can take a stage; computes and
    sets it under one lock, so concurrent refreshes cannot leave a stale status."""

    def __init__(self, servicer: HealthServicer, can_serve: Callable[[], bool]) -> None:
        self.servicer = servicer
        self._can_serve = can_serve
        self._lock = threading.Lock()
        self._shutting_down = False
        self._last: bool | None = None

    def refresh(self) -> None:
        with self._lock:
            ready = not self._shutting_down and self._can_serve()
            if ready == self._last:
                return
            self._last = ready
            self.servicer.set(READINESS_SERVICES, SERVING if ready else NOT_SERVING)

    def shutting_down(self) -> None:
        with self._lock:
            self._shutting_down = True
            self._last = False
            self.servicer.enter_graceful_shutdown()
