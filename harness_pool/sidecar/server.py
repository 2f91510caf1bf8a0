"""The sidecar: one gRPC server on one fixed address, the pool and its supervisor.

Services on the one port: Beam's ``BeamFnExternalWorkerPool`` (the runner),
``harness_pool.v1.WorkerRegistry`` (pooled workers), ``harness_pool.v1.PoolAdmin``
(status), ``grpc.health.v1.Health`` (probes).

Shutdown order (``stop``): readiness NOT_SERVING → no new assignments (waiting
StartWorker calls fail with a clear error, idle workers are released) → running
stages get ``drain_timeout`` to finish → gRPC server stops accepting and closes
streams → every worker process gets SIGTERM, then SIGKILL after ``stop_grace``,
and is reaped; each exit code is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from typing import TYPE_CHECKING

import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from grpc_health.v1 import health_pb2_grpc

from harness_pool._errors import PermanentError
from harness_pool.pool.core import PoolCore, WorkerState
from harness_pool.pool.forkserver import ForkServerLauncher
from harness_pool.pool.pool import Pool
from harness_pool.pool.supervisor import Launcher, Supervisor, WorkerLauncher
from harness_pool.sidecar.admin_service import Health, PoolAdminServicer
from harness_pool.sidecar.dispatch import PooledDispatcher
from harness_pool.sidecar.metrics import SidecarMetrics
from harness_pool.sidecar.registry_service import WorkerRegistryServicer
from harness_pool.sidecar.runner_service import Dispatcher, ExternalWorkerPoolServicer
from harness_pool.sidecar.settings import SidecarSettings
from harness_pool.v1 import pool_pb2, pool_pb2_grpc

if TYPE_CHECKING:
    from harness_pool.proxy import ExternalWorkers

_LOG = logging.getLogger("harness_pool.sidecar")

#: Fn API messages carry whole bundles' elements; follow Beam's own limit.
MAX_MESSAGE_BYTES = 2**31 - 1
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


class Sidecar:
    def __init__(
        self,
        settings: SidecarSettings,
        launcher: Launcher | None = None,
        metrics: SidecarMetrics | None = None,
    ) -> None:
        self.settings = settings.validate()
        self.metrics = metrics or SidecarMetrics()
        self.metrics.pool_size.set(settings.workers)
        self.core = PoolCore(settings.workers, settings.process_cap, settings.id_prefix)
        self.pool = Pool(self.core, observer=self.metrics)
        self.dispatcher: Dispatcher = PooledDispatcher(self.pool)
        self.external: ExternalWorkers | None = None
        self.health = Health(self._can_serve)
        self.pool.on_change = self.health.refresh
        self._launcher = launcher
        self._owned_launcher: Launcher | None = None
        self._health_server: grpc.Server | None = None
        self.supervisor: Supervisor | None = None
        self.address = ""
        self.metrics_port = 0
        self._stopped = threading.Event()
        threads = 32 + 4 * settings.process_cap + 16 * len(settings.external_worker_ids)
        self._executor = futures.ThreadPoolExecutor(max_workers=threads,
                                                    thread_name_prefix="hp-grpc")
        self.server = grpc.server(self._executor, options=GRPC_OPTIONS)
        if settings.external_worker_ids:
            # Fixed-endpoint mode: unmodified SDK harnesses connect here and are
            # forwarded to their stage's runner servers (harness_pool.proxy).
            from harness_pool.proxy import ExternalWorkers

            self.external = ExternalWorkers(settings, self.metrics, self.health.refresh)
            self.external.register(self.server)
            self.dispatcher = self.external.dispatcher(self.dispatcher)
        beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
            ExternalWorkerPoolServicer(self.dispatcher, settings,
                                       on_error=self.metrics.start_error), self.server)
        pool_pb2_grpc.add_WorkerRegistryServicer_to_server(
            WorkerRegistryServicer(self.pool), self.server)
        pool_pb2_grpc.add_PoolAdminServicer_to_server(
            PoolAdminServicer(self.status, self.pool.recycle), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.server)

    def _can_serve(self) -> bool:
        if self.external is not None and self.external.can_serve():
            return True
        return self.pool.counts().get(WorkerState.IDLE.value, 0) > 0

    # -- life cycle -----------------------------------------------------------

    def start(self) -> str:
        """Binds, starts serving and starts warming workers; returns HOST:PORT."""
        s = self.settings
        port = _bind(self.server, s.host, s.port)
        self.address = f"{s.host}:{port}"
        reach = self.address if s.host not in ("0.0.0.0", "::", "[::]") else f"127.0.0.1:{port}"
        # -- fixed-endpoint mode (harness_pool.proxy): endpoints it hands out name us.
        if self.external is not None:
            if s.fn_api_port:
                fn_port = _bind(self.server, s.host, s.fn_api_port)
                self.external.set_address(f"{reach.rsplit(':', 1)[0]}:{fn_port}")
            else:
                self.external.set_address(reach)
        # -- end fixed-endpoint mode
        launcher = self._launcher or (ForkServerLauncher(reach, s.flavor) if s.spawn == "fork"
                                      else WorkerLauncher(reach, s.flavor))
        self._owned_launcher = launcher if self._launcher is None else None
        self.supervisor = Supervisor(launcher, self.pool, grace=s.stop_grace)
        self.pool.supervisor = self.supervisor
        if s.health_port:
            self._health_server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="hp-health"))
            health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer,
                                                         self._health_server)
            _bind(self._health_server, s.health_host, s.health_port)
            self._health_server.start()
        self.server.start()
        self.supervisor.start()
        if s.metrics_port:
            self.metrics_port = self.metrics.serve(s.metrics_host or s.host, s.metrics_port)
        _LOG.info("sidecar listening on %s (flavor %s, %s); warming %d workers%s%s",
                  self.address, s.flavor, s.spawn, s.workers,
                  f"; health on {s.health_host}:{s.health_port}" if s.health_port else "",
                  f"; metrics on :{self.metrics_port}/metrics" if self.metrics_port else "")
        return self.address

    def wait_warm(self, n: int | None = None, timeout: float = 60.0) -> bool:
        """Waits until ``n`` (default: all ``workers``) workers are idle and warm."""
        want = self.settings.workers if n is None else n
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pool.counts().get(WorkerState.IDLE.value, 0) >= want:
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Graceful shutdown in the fixed order of the module docstring (idempotent)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        s = self.settings
        _LOG.info("shutting down: readiness NOT_SERVING, taking no new stages")
        self.health.shutting_down()
        self.pool.drain()
        if self.external is not None:
            self.external.drain()
        deadline = time.monotonic() + s.drain_timeout
        drained = self.pool.wait_until_no_stage(s.drain_timeout)
        if self.external is not None:
            drained = self.external.wait_until_no_stage(
                max(0.0, deadline - time.monotonic())) and drained
        if not drained:
            _LOG.warning("stages still running after %.0fs drain; stopping their workers",
                         s.drain_timeout)
        if self.external is not None:
            self.external.stop()
        self.server.stop(grace=1.0).wait()
        if self._health_server is not None:
            self._health_server.stop(grace=0.5).wait()
        if self.supervisor is not None:
            self.supervisor.shutdown(s.stop_grace)
        close = getattr(self._owned_launcher, "close", None)
        if close is not None:
            close()
        self._executor.shutdown(wait=True)
        self.metrics.close()
        _LOG.info("sidecar stopped")

    # -- status ---------------------------------------------------------------

    def status(self) -> pool_pb2.PoolStatus:
        workers, history = self.pool.snapshot()
        if self.external is not None:
            workers.extend(self.external.snapshot())
        return pool_pb2.PoolStatus(
            address=self.address, serving=self._can_serve() and not self._stopped.is_set(),
            flavor=self.settings.flavor, target_idle=self.settings.workers,
            workers=workers, assignments=history, draining=self.core.draining,
        )


def _bind(server: grpc.Server, host: str, port: int) -> int:
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise PermanentError(f"cannot listen on {host}:{port}: {exc}") from exc
    if not bound:
        raise PermanentError(f"cannot listen on {host}:{port} (in use?)")
    return int(bound)
