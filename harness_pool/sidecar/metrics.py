"""Prometheus metrics of the sidecar, on their own registry (one per sidecar).

``SidecarMetrics`` is the pool's ``Observer``; the fixed-endpoint proxy adds
bytes with ``forwarded``; the usage sampler (``harness_pool.sidecar.usage``)
feeds the per-slot worker CPU and RSS. ``serve(host, port)`` exposes ``/metrics``.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from harness_pool.sidecar.deps_status import DepsStatus
from harness_pool.v1 import pool_pb2

_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: Every ``reason`` of harness_pool_start_worker_errors_total (the labels the pool, the
#: runner service and the fixed-endpoint proxy count; ``DuplicateWorker`` and
#: ``PoolError`` are the error classes a runner can meet: a runner worker id already
#: served, a draining sidecar). Exported at 0 from the start: an alert on ``increase``
#: sees the first error, which a series born at 1 would hide.
START_ERROR_REASONS = ("bad_request", "provision_unreachable", "runner_unreachable",
                       "no_idle_worker", "cancelled", "start_timeout", "start_failed",
                       "worker_died", "external_refused", "DuplicateWorker", "PoolError")
#: Every ``cause`` of harness_pool_worker_restarts_total, exported at 0 from the start.
RESTART_CAUSES = ("served", "crashed", "released")


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
        # -- per-slot worker usage (harness_pool.sidecar.usage; issue 13)
        self.worker_cpu = Counter(
            "harness_pool_worker_cpu_seconds",
            "User+system CPU seconds of the pooled workers that held a stage in this slot "
            "(seat), counted from taking the seat to the end of the stage; includes workers "
            "that have exited", ["slot"], registry=r)
        self.worker_rss = Gauge(
            "harness_pool_worker_rss_bytes",
            "Resident memory of the worker holding a stage in this slot (seat); 0 when free",
            ["slot"], registry=r)
        # -- every known label value starts at 0, so an alert sees the first event
        for reason in START_ERROR_REASONS:
            self.start_errors.labels(reason)
        for cause in RESTART_CAUSES:
            self.restarts.labels(cause)
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
