"""A stage's job environment in a pooled worker: what the job staged, made importable.

Called by ``worker.serve_assignment`` between the assignment and Beam's
``create_harness``:

- Beam jobs: the artifacts the provision info lists are staged into the
  worker's *private* semi-persistent directory and installed through the pod's
  environment cache (``harness_pool.deps.prepare``), once per pod per content;
- PyFlink jobs: the TaskManager has already pip-installed ``python.requirements``
  into a prefix and names it in ``params["PYTHONPATH"]`` (with
  ``--ignore-installed``, so that prefix may hold its own protobuf, grpcio or
  Beam); those entries are checked against what the worker has imported, so
  a clash is a clear StartWorker error instead of a stage that breaks later.

Every failure is a ``DependencyError`` whose text goes as is into
``StartFailed.reason`` (hence ``StartWorkerResponse.error``); the worker is
then recycled like any worker that failed to start.

``FACTS`` (the interpreter and its distributions, about 80 ms to collect) is
taken once per fork server after its imports (``warm_facts``) and inherited
by every forked worker; a worker started with ``--spawn exec`` collects it
only when a job has something to check.

Threads: everything here runs on the worker's main thread.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apache_beam.portability.api import beam_provision_api_pb2

from harness_pool.deps import DependencyError, EnvCache, PreparedEnvironment, WorkerFacts, prepare
from harness_pool.deps.conflicts import find_conflicts
from harness_pool.deps.errors import CacheBusyError, CacheError, CacheFullError
from harness_pool.deps.installer import Installer, read_distributions
from harness_pool.deps.runtime import imported_modules
from harness_pool.deps.settings import DepsSettings
from harness_pool.v1 import pool_pb2

FACTS: WorkerFacts | None = None
"""This interpreter's facts, taken by the fork server after its imports (see module doc)."""


def warm_facts() -> None:
    """Collects ``FACTS`` now (the fork server calls it once; forked workers inherit it)."""
    global FACTS
    FACTS = WorkerFacts.detect()


def facts() -> WorkerFacts:
    global FACTS
    if FACTS is None:
        FACTS = WorkerFacts.detect()
    return FACTS


def deps_config(settings: DepsSettings, prepare_seconds: float) -> pool_pb2.DepsConfig:
    """The part of the sidecar's settings a worker needs for one stage."""
    return pool_pb2.DepsConfig(
        cache_dir=settings.cache_dir, cache_size=settings.cache_size,
        pip_timeout=settings.pip_timeout, prepare_seconds=prepare_seconds,
        call_timeout=settings.call_timeout)


def _settings(config: pool_pb2.DepsConfig) -> DepsSettings:
    d = DepsSettings()
    return DepsSettings(
        cache_dir=config.cache_dir or d.cache_dir,
        cache_size=config.cache_size if config.cache_dir else d.cache_size,
        pip_timeout=config.pip_timeout or d.pip_timeout,
        prepare_timeout=config.prepare_seconds or d.prepare_timeout,
        call_timeout=config.call_timeout or d.call_timeout)


@dataclasses.dataclass
class StageEnvironment:
    """What ``prepare_stage`` set up; ``close()`` when the stage ends."""

    prepared: PreparedEnvironment | None
    report: pool_pb2.PrepareReport

    def activate(self) -> None:
        if self.prepared is not None:
            self.prepared.activate()

    def close(self) -> None:
        if self.prepared is not None:
            self.prepared.close()


def prepare_stage(assignment: pool_pb2.Assignment, semi_dir: str,
                  on_preparing: Callable[[int], None]) -> StageEnvironment:
    """Stages and installs what the job shipped; raises ``DependencyError``.

    ``on_preparing(n)`` is called before anything slow happens (only when the
    job staged ``n`` > 0 artifacts), so the sidecar can extend its wait.
    """
    stage = assignment.runner_worker_id
    check_pythonpath(stage, dict(assignment.params))
    info = beam_provision_api_pb2.ProvisionInfo()
    if assignment.provision_info:
        info.ParseFromString(assignment.provision_info)
    dependencies = list(info.dependencies)
    if not dependencies:
        return StageEnvironment(None, pool_pb2.PrepareReport(outcome="none"))
    on_preparing(len(dependencies))
    settings = _settings(assignment.deps)
    try:
        cache = EnvCache(settings.cache_dir, settings.max_bytes)
        prepared = _prepare(assignment, info, dependencies, semi_dir, settings, cache)
    except (CacheError, CacheFullError, CacheBusyError) as exc:
        # name the pod's cache: the operator's to resize or fix
        raise type(exc)(f"{exc} (environment cache {settings.cache_dir}, "
                        "--env-cache-dir)") from exc
    stats, counters = prepared.stats, cache.counters
    report = pool_pb2.PrepareReport(
        outcome=stats.outcome, pip_runs=stats.pip_runs, seconds=stats.seconds,
        artifacts=stats.staging.artifacts, artifacts_reused=stats.staging.reused,
        artifacts_fetched=stats.staging.fetched, bytes_fetched=stats.staging.bytes_fetched,
        artifact_rpcs=stats.staging.rpcs, evictions=counters.evictions,
        evicted_bytes=counters.evicted_bytes, env_key=str(prepared.env_key))
    return StageEnvironment(prepared, report)


def _prepare(assignment: pool_pb2.Assignment, info: beam_provision_api_pb2.ProvisionInfo,
             dependencies: list[Any], semi_dir: str, settings: DepsSettings, cache: EnvCache
             ) -> PreparedEnvironment:
    return prepare(
        dependencies,
        artifact_endpoint=assignment.artifact_endpoint or info.artifact_endpoint.url,
        runner_worker_id=assignment.runner_worker_id, semi_dir=semi_dir, cache=cache,
        deadline=time.monotonic() + settings.prepare_timeout, facts=facts(),
        installer=Installer(pip_timeout=settings.pip_timeout),
        call_timeout=settings.call_timeout)


def check_pythonpath(stage: str, params: dict[str, str]) -> None:
    """Refuses ``params["PYTHONPATH"]`` entries holding distributions that clash with the
    worker's imported ones (PyFlink's ``python.requirements`` prefix)."""
    entries = [Path(p) for p in params.get("PYTHONPATH", "").split(os.pathsep) if p]
    directories = [p for p in dict.fromkeys(entries) if p.is_dir()]
    if not directories:
        return
    provided = read_distributions(directories)
    if not provided:
        return
    worker = facts()
    conflicts = find_conflicts(provided, worker.distributions, imported_modules())
    if conflicts:
        error = conflicts[0].error(worker.runtime.beam_version)
        raise type(error)(
            f"stage {stage}: PYTHONPATH from the TaskManager (python.requirements, installed "
            f"by Flink with --ignore-installed) brings {conflicts[0].package} "
            f"{conflicts[0].job_version}: {error}; pin {conflicts[0].package}=="
            f"{conflicts[0].worker_version} in the requirements file",
            error.package, error.job_version, error.worker_version)


def failure_reason(exc: BaseException) -> str:
    """The StartFailed text: a ``DependencyError`` says it all; others get their type."""
    if isinstance(exc, DependencyError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def failure_kind(exc: BaseException) -> str:
    """``StartFailed.kind``: "dependencies" for a ``DependencyError``, else empty."""
    return "dependencies" if isinstance(exc, DependencyError) else ""
