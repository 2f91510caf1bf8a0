"""Prometheus metrics of the sidecar, on their own registry (one per sidecar).

``SidecarMetrics`` is the pool's ``Observer``; the fixed-endpoint proxy adds
bytes with ``forwarded``. ``serve(host, port)`` exposes ``/metrics``.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from harness_pool.sidecar.deps_status import DepsStatus
from harness_pool.v1 import pool_pb2

_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class SidecarMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.workers = Gauge("harness_pool_workers", "Pooled worker processes by state",
                             ["state"], registry=r)
        self.pool_size = Gauge("harness_pool_pool_size",
                               "Warm workers the pool keeps ready (--workers)", registry=r)
        self.time_to_ready = Histogram(
            "harness_pool_time_to_ready_seconds",
            "From StartWorker arriving to the SDK harness connected to the runner",
            buckets=_TIME_BUCKETS, registry=r)
        self.assign_wait = Histogram(
            "harness_pool_assignment_wait_seconds",
            "Time StartWorker waited for an idle worker", buckets=_TIME_BUCKETS, registry=r)
        self.warm_time = Histogram(
            "harness_pool_worker_warm_seconds",
            "From worker process start until warm and attached", buckets=_TIME_BUCKETS,
            registry=r)
        self.start_errors = Counter("harness_pool_start_worker_errors_total",
                                    "StartWorker calls answered with an error", ["reason"],
                                    registry=r)
        self.assignments = Counter("harness_pool_assignments_total",
                                   "Stages served by a worker", ["kind"], registry=r)
        self.restarts = Counter("harness_pool_worker_restarts_total",
                                "Worker processes that exited and were replaced", ["cause"],
                                registry=r)
        self.forwarded = Counter("harness_pool_forwarded_bytes_total",
                                 "Bytes forwarded in fixed-endpoint mode", ["service"],
                                 registry=r)
        self.external = Gauge("harness_pool_external_workers",
                              "External (fixed-endpoint) workers by state", ["state"],
                              registry=r)
        self._http: Any = None
        self._lock = threading.Lock()
        self.deps: DepsStatus | None = None  # job dependencies (issue 9), set by the sidecar

    # -- Observer -------------------------------------------------------------

    def pool_changed(self, counts: dict[str, int]) -> None:
        for state, n in counts.items():
            self.workers.labels(state).set(n)

    def assigned(self, wait_seconds: float, ready_seconds: float) -> None:
        self.assign_wait.observe(wait_seconds)
        self.time_to_ready.observe(ready_seconds)
        self.assignments.labels("pooled").inc()

    def start_error(self, reason: str) -> None:
        self.start_errors.labels(reason).inc()

    def worker_exited(self, pool_id: str, code: int | None, served: int) -> None:
        cause = "served" if served else ("crashed" if code else "released")
        self.restarts.labels(cause).inc()

    def worker_warm(self, seconds: float) -> None:
        self.warm_time.observe(seconds)

    def stage_prepared(self, report: pool_pb2.PrepareReport) -> None:
        if self.deps is not None:
            self.deps.stage_prepared(report)

    def dependencies_failed(self) -> None:
        if self.deps is not None:
            self.deps.failed()

    # -- HTTP -----------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Starts ``/metrics`` on host:port (0 = any free port); returns the port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_address[1])

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
