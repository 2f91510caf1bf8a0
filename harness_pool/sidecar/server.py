"""The sidecar: gRPC listeners, the pool and its supervisor.

Listeners (each with its own threads, so a flood on one cannot starve another):

- the main port (``--host``/``--port``): Beam's ``BeamFnExternalWorkerPool``
  (the runner), ``grpc.health.v1.Health`` (probes), ``PoolAdmin.GetStatus``,
  and in fixed-endpoint mode the SDK-facing Fn API (also on ``--fn-api-port``);
  at most ``rpc_cap`` calls at once, more get RESOURCE_EXHAUSTED;
- the worker port (127.0.0.1, ephemeral): ``WorkerRegistry.Attach`` of the
  pooled workers the sidecar spawned, sized to ``--max-processes``;
- optional: a health-only port for the kubelet (``--health-port``) and the
  admin address (``--admin-address``), the only place ``RecycleWorker`` works.

Two housekeeping threads: the runner watch (``runner_watch``: a worker whose
runner's control endpoint refuses connections for ``--runner-lost-after`` is
stopped and replaced) and the usage sampler (``usage``: per-slot CPU and RSS
of the workers holding stages, from /proc).

Every listener has the same limits: message size (``--max-message-mib``),
keepalive (a frozen peer's connection is closed), streams per connection; one
``Watchdog`` cancels streams that must speak first and stay silent
(``--first-message-timeout``) and health watchers that do not read.

Shutdown order (``stop``): readiness NOT_SERVING → no new assignments (waiting
StartWorker calls fail with a clear error, idle workers are released) → running
stages get ``drain_timeout`` to finish → listeners stop accepting and close
streams → every worker process gets SIGTERM, then SIGKILL after ``stop_grace``,
and is reaped; each exit code is logged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent import futures
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2_grpc

from harness_pool._errors import PermanentError
from harness_pool._grpc import Watchdog, server_options
from harness_pool.pool import reaping
from harness_pool.pool.core import PoolCore, WorkerState
from harness_pool.pool.dispatch import Dispatcher, PooledDispatcher
from harness_pool.pool.forkserver import ForkServerLauncher
from harness_pool.pool.interpreters import InterpreterLaunchers
from harness_pool.pool.pool import Pool
from harness_pool.pool.supervisor import Launcher, Supervisor, WorkerLauncher
from harness_pool.sidecar.admin_service import PoolAdminServicer
from harness_pool.sidecar.deps_status import DepsStatus
from harness_pool.sidecar.health import HealthServicer, Readiness
from harness_pool.sidecar.metrics import SidecarMetrics
from harness_pool.sidecar.registry_service import WorkerRegistryServicer
from harness_pool.sidecar.runner_service import ExternalWorkerPoolServicer
from harness_pool.sidecar.runner_watch import RunnerWatch, is_gone
from harness_pool.sidecar.settings import SidecarSettings
from harness_pool.sidecar.usage import UsageSampler
from harness_pool.v1 import pool_pb2, pool_pb2_grpc

if TYPE_CHECKING:
    from harness_pool.proxy import ExternalWorkers

_LOG = logging.getLogger("harness_pool.sidecar")

#: Health-only and admin listeners: a few threads; health keeps half for Check.
_HEALTH_THREADS = 8
_MAX_WATCHERS = 4
_ADMIN_THREADS = 4


class _Listener:
    """One grpc.Server with its own bounded thread pool."""

    def __init__(self, name: str, threads: int, options: list[tuple[str, int]]) -> None:
        self.executor = futures.ThreadPoolExecutor(max_workers=threads,
                                                   thread_name_prefix=f"hp-{name}")
        self.server = grpc.server(self.executor, options=options,
                                  maximum_concurrent_rpcs=threads)

    def stop(self, grace: float) -> None:
        self.server.stop(grace=grace).wait()
        self.executor.shutdown(wait=True)


class Sidecar:
    def __init__(
        self,
        settings: SidecarSettings,
        launcher: Launcher | None = None,
        metrics: SidecarMetrics | None = None,
    ) -> None:
        self.settings = s = settings.validate()
        self.metrics = metrics or SidecarMetrics()
        self.metrics.pool_size.set(s.workers)
        self.core = PoolCore(s.workers, s.process_cap, s.id_prefix)
        self.pool = Pool(self.core, observer=self.metrics)
        self.dispatcher: Dispatcher = PooledDispatcher(self.pool)
        self.external: ExternalWorkers | None = None
        self.watchdog = Watchdog()
        self.health_servicer = HealthServicer(self.watchdog, self._alive, _MAX_WATCHERS)
        self.health = Readiness(self.health_servicer, self._can_serve)
        self.pool.on_change = self.health.refresh
        self.interpreters: InterpreterLaunchers | None = None
        self.deps_status = DepsStatus(self.metrics.registry, s.deps, self._interpreters)
        self.metrics.deps = self.deps_status
        # -- issue 13: per-slot usage, and workers whose runner vanished
        self.usage = UsageSampler(self.metrics, s.workers, s.usage_interval)
        self.pool.seat_hooks = self.usage
        self.pool.runner_lost = is_gone
        self.runner_watch = RunnerWatch(self.pool, s.runner_check_interval, s.runner_lost_after)
        self._launcher = launcher
        self._owned_launcher: Launcher | None = None
        self.supervisor: Supervisor | None = None
        self.address = ""
        self.worker_address = ""
        self.metrics_port = 0
        self._stopped = threading.Event()
        self._options = server_options(s.max_message_bytes, s.keepalive_time,
                                       s.keepalive_timeout)
        self._main = _Listener("grpc", s.rpc_cap, self._options)
        self._workers = _Listener("attach", s.process_cap + 8, self._options)
        self._health_listener: _Listener | None = None
        self._admin_listener: _Listener | None = None
        self.server = self._main.server
        if s.external_worker_ids:
            # Fixed-endpoint mode: unmodified SDK harnesses connect here and are
            # forwarded to their stage's runner servers (harness_pool.proxy).
            from harness_pool.proxy import (
                ExternalDispatcher,
                ExternalWorkers,
                ProxySettings,
                handlers,
            )

            self.external = ExternalWorkers(ProxySettings(
                external_worker_ids=s.external_worker_ids, pooled_workers=s.workers,
                start_timeout=s.start_timeout, provision_hold_timeout=s.provision_hold_timeout,
                max_message_bytes=s.max_message_bytes,
                first_message_timeout=s.first_message_timeout,
            ), self.metrics, self.health.refresh)
            self.server.add_generic_rpc_handlers(handlers(self.external, self.watchdog))
            self.dispatcher = ExternalDispatcher(self.external, self.dispatcher)
        self.server.add_generic_rpc_handlers((ExternalWorkerPoolServicer(
            self.dispatcher, s, on_error=self.metrics.start_error).handler(),))
        pool_pb2_grpc.add_PoolAdminServicer_to_server(
            PoolAdminServicer(self.status, self.pool.recycle, allow_recycle=False), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health_servicer, self.server)
        pool_pb2_grpc.add_WorkerRegistryServicer_to_server(
            WorkerRegistryServicer(self.pool, self.watchdog, s.first_message_timeout),
            self._workers.server)

    def _can_serve(self) -> bool:
        if self.external is not None and self.external.can_serve():
            return True
        return self.pool.can_serve()

    def _alive(self) -> bool:
        """Liveness: the supervisor loop still completes passes."""
        sup = self.supervisor
        return sup is None or sup.beat_age() < self.settings.liveness_timeout

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
        self.worker_address = f"127.0.0.1:{_bind(self._workers.server, '127.0.0.1', 0)}"
        launcher = self._launcher or self._make_launchers()
        self._owned_launcher = launcher if self._launcher is None else None
        reap = reaping.reaps_orphans(reaping.ReapMode(s.reap_orphans))
        self.supervisor = Supervisor(launcher, self.pool, grace=s.stop_grace, reap_orphans=reap)
        self.pool.supervisor = self.supervisor
        if s.health_port:
            self._health_listener = _Listener("health", _HEALTH_THREADS, self._options)
            health_pb2_grpc.add_HealthServicer_to_server(self.health_servicer,
                                                         self._health_listener.server)
            _bind(self._health_listener.server, s.health_host, s.health_port)
            self._health_listener.server.start()
        if s.admin_address:
            self._admin_listener = _Listener("admin", _ADMIN_THREADS, self._options)
            pool_pb2_grpc.add_PoolAdminServicer_to_server(
                PoolAdminServicer(self.status, self.pool.recycle, allow_recycle=True),
                self._admin_listener.server)
            _bind_address(self._admin_listener.server, s.admin_address)
            self._admin_listener.server.start()
        self._workers.server.start()
        self.server.start()
        self.supervisor.start()
        self.usage.start()
        self.runner_watch.start()
        if s.metrics_port:
            self.metrics_port = self.metrics.serve(s.metrics_host or s.host, s.metrics_port)
        _LOG.info("sidecar listening on %s (flavor %s, %s); warming %d workers%s%s%s%s",
                  self.address, s.flavor, s.spawn, s.workers,
                  f"; health on {s.health_host}:{s.health_port}" if s.health_port else "",
                  f"; admin on {s.admin_address}" if s.admin_address else "",
                  f"; metrics on :{self.metrics_port}/metrics" if self.metrics_port else "",
                  "; reaping orphans" if reap else "")
        return self.address

    def _make_launchers(self) -> InterpreterLaunchers:
        """The pool's own launcher, plus one per job interpreter on demand (issue 9)."""
        s = self.settings

        def make(python: str, cwd: str) -> Launcher:
            if s.spawn == "fork":
                return ForkServerLauncher(self.worker_address, s.flavor, python, cwd=cwd)
            return WorkerLauncher(self.worker_address, s.flavor, python, cwd=cwd)

        self.interpreters = InterpreterLaunchers(make, idle_timeout=s.deps.interpreter_idle)
        return self.interpreters

    def _interpreters(self) -> list[str]:
        return self.interpreters.interpreters() if self.interpreters is not None else []

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
        self.pool.stop_all("the sidecar shut down" + (
            "" if drained else f" ({s.drain_timeout:g} s of drain were not enough)"))
        if self.external is not None:
            self.external.stop()
        self.runner_watch.stop()
        self._main.stop(1.0)
        for listener in (self._health_listener, self._admin_listener):
            if listener is not None:
                listener.stop(0.5)
        if self.supervisor is not None:
            self.supervisor.shutdown(s.stop_grace)
        self._workers.stop(0.5)
        close = getattr(self._owned_launcher, "close", None)
        if close is not None:
            close()
        self.watchdog.stop()
        self.usage.stop()
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
            env_cache=self.deps_status.to_proto(),
        )


def _bind(server: grpc.Server, host: str, port: int) -> int:
    return _bind_address(server, f"{host}:{port}")


def _bind_address(server: grpc.Server, address: str) -> int:
    if address.startswith("unix:"):
        folder = os.path.dirname(os.path.abspath(address[len("unix:"):]))
        if not os.path.isdir(folder):
            raise PermanentError(f"cannot listen on {address}: the folder {folder} does not "
                                 "exist (in Kubernetes, mount a volume there)")
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise PermanentError(f"cannot listen on {address}: {exc}") from exc
    if not bound:
        raise PermanentError(f"cannot listen on {address} (in use?)")
    return int(bound)
