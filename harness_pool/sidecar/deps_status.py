"""The pod's environment cache as the sidecar reports it: counters and bytes in use.

Workers prepare a stage's dependencies in their own processes and report
what happened with ``Ready.prepare`` (``PrepareReport``); the pool hands each
report to ``DepsStatus.stage_prepared`` (through ``SidecarMetrics``), which
sums them into Prometheus counters (``harness_pool_env_cache_*``) and into the
``env_cache`` block of ``GetStatus`` (``harness-pool status --json``). Bytes in
use, environments and artifacts are read from the cache directory when asked
(at most once a second), never created by it.

Threads: gRPC threads report and read; ``_lock`` guards the tallies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from harness_pool.deps import CacheUsage, EnvCache
from harness_pool.deps.settings import DepsSettings
from harness_pool.v1 import pool_pb2

_TALLIES = ("hits", "waits", "builds", "pip_runs", "evictions", "artifacts_fetched",
            "artifacts_reused", "bytes_fetched", "failures")


class DepsStatus:
    def __init__(self, registry: CollectorRegistry, settings: DepsSettings,
                 interpreters: Callable[[], list[str]] = list) -> None:
        self.settings = settings
        self.interpreters = interpreters
        self._lock = threading.Lock()
        self._tally = dict.fromkeys(_TALLIES, 0)
        self._usage: tuple[float, CacheUsage | None] = (0.0, None)
        r = registry
        self.outcomes = {name: Counter(f"harness_pool_env_cache_{name}", what, registry=r)
                         for name, what in (
            ("hits", "Stages whose job environment was found complete (no pip)"),
            ("waits", "Stages that waited for another worker building their environment"),
            ("builds", "Job environments built (pip ran)"),
            ("failures", "Stages refused for their dependencies (conflict, bad artifact, "
             "pip failure, full cache)"))}
        self.pip_runs = Counter("harness_pool_env_cache_pip_runs",
                                "pip processes run to build job environments", registry=r)
        self.evictions = Counter("harness_pool_env_cache_evictions",
                                 "Cache entries evicted (least recently used, not in use)",
                                 registry=r)
        self.fetched = Counter("harness_pool_env_cache_artifact_bytes_fetched",
                               "Bytes of job artifacts downloaded from runners", registry=r)
        self.artifacts = Counter("harness_pool_env_cache_artifacts",
                                 "Job artifacts staged, by source: fetched from the runner or "
                                 "reused from the pod's store", ["source"], registry=r)
        for name, what, pick in (
                ("bytes", "Bytes the environment cache holds now",
                 lambda u: u.total_bytes),
                ("environments", "Complete job environments in the cache now",
                 lambda u: u.environments),
                ("limit_bytes", "--env-cache-size (0: unbounded)",
                 lambda u: u.limit_bytes or 0)):
            gauge = Gauge(f"harness_pool_env_cache_{name}", what, registry=r)
            gauge.set_function(self._reader(pick))

    def _reader(self, pick: Callable[[CacheUsage], int]) -> Callable[[], float]:
        def read() -> float:
            usage = self.usage()
            return float(pick(usage)) if usage is not None else 0.0
        return read

    # -- reports from the pool --------------------------------------------------

    def stage_prepared(self, report: pool_pb2.PrepareReport) -> None:
        if report.outcome in ("", "none"):
            return
        with self._lock:
            key = {"hit": "hits", "waited": "waits", "built": "builds"}.get(report.outcome)
            if key:
                self._tally[key] += 1
            self._tally["pip_runs"] += report.pip_runs
            self._tally["evictions"] += report.evictions
            self._tally["artifacts_fetched"] += report.artifacts_fetched
            self._tally["artifacts_reused"] += report.artifacts_reused
            self._tally["bytes_fetched"] += report.bytes_fetched
        key = {"hit": "hits", "waited": "waits", "built": "builds"}.get(report.outcome)
        if key:
            self.outcomes[key].inc()
        self.pip_runs.inc(report.pip_runs)
        self.evictions.inc(report.evictions)
        self.fetched.inc(report.bytes_fetched)
        self.artifacts.labels("fetched").inc(report.artifacts_fetched)
        self.artifacts.labels("reused").inc(report.artifacts_reused)

    def failed(self) -> None:
        with self._lock:
            self._tally["failures"] += 1
        self.outcomes["failures"].inc()

    # -- reading -----------------------------------------------------------------

    def usage(self) -> CacheUsage | None:
        """The cache on disk now (None until a worker created it); read at most once a second."""
        now = time.monotonic()
        with self._lock:
            at, usage = self._usage
            if now - at < 1.0:
                return usage
        usage = None
        if (Path(self.settings.cache_dir) / "envs").is_dir():
            try:
                usage = EnvCache(self.settings.cache_dir, self.settings.max_bytes).usage()
            except Exception:  # a status read must never fail on the cache
                usage = None
        with self._lock:
            self._usage = (now, usage)
        return usage

    def to_proto(self) -> pool_pb2.EnvCacheStatus:
        usage = self.usage()
        with self._lock:
            tally = dict(self._tally)
        return pool_pb2.EnvCacheStatus(
            dir=self.settings.cache_dir, limit_bytes=self.settings.cache_size,
            bytes_in_use=usage.total_bytes if usage else 0,
            environments=usage.environments if usage else 0,
            blobs=usage.blobs if usage else 0, interpreters=self.interpreters(), **tally)
