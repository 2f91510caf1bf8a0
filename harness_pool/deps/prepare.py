"""The one call a pooled worker makes between its assignment and Beam's SDK harness.

``prepare(...)`` does, for one stage, what Beam's container boot does before
it starts the harness (see docs/dependencies.md for the boot's duties), with
two differences: installed packages live in the pod's environment cache and
are built once per content, and a job that clashes with what the worker
has already imported is refused with a clear error instead of breaking later.

Contract:
- call it in the forked worker, after the assignment arrives and before
  ``sdk_worker_main.create_harness``; set ``SEMI_PERSISTENT_DIRECTORY`` to
  the same ``semi_dir`` so the harness finds ``staged/pickled_main_session``;
- then ``PreparedEnvironment.activate()`` (puts the environment's
  site-packages first on ``sys.path``, processing their ``.pth`` files) and
  keep the object open while the stage runs; ``close()`` (or the process's
  exit) lets the cache evict the environment again;
- it writes only under ``semi_dir/staged/`` and the cache root; it never
  touches ``sys.path``, ``sys.modules`` or ``os.environ`` itself (``activate``
  does, on request); it never contacts a package index;
- it runs on the caller's thread, starts no thread of its own (gRPC has its
  own), runs pip in child processes, and is bounded by ``deadline``
  (``time.monotonic()`` seconds) in every RPC, lock wait and pip run;
- every failure is a ``DependencyError`` (see errors.py) whose text can go
  as is into ``StartWorkerResponse.error``; after a failure the cache is
  consistent, nothing of the job was imported, the staged dir may be
  incomplete: the worker reports the error and is recycled.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import re
import site
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness_pool.deps import manifest as mf
from harness_pool.deps.artifacts import ArtifactClient
from harness_pool.deps.conflicts import find_conflicts, sdk_conflict
from harness_pool.deps.envcache import BuildFn, EnvCache, EnvLease, Outcome
from harness_pool.deps.errors import BadArtifactError
from harness_pool.deps.installer import BASE_PTH, Installer
from harness_pool.deps.plan import NO_ENVIRONMENT, EnvKey, Plan, Runtime, install_steps, make_plan
from harness_pool.deps.runtime import detect_runtime, imported_modules, installed_distributions
from harness_pool.deps.staging import StagingStats, stage_artifacts

_LOG = logging.getLogger("harness_pool.deps")


@dataclasses.dataclass(frozen=True)
class WorkerFacts:
    """What prepare needs to know about the worker; take it once in the fork server."""

    runtime: Runtime
    distributions: Mapping[str, str]

    @classmethod
    def detect(cls) -> WorkerFacts:
        dists = installed_distributions()
        return cls(detect_runtime(dists), dists)


@dataclasses.dataclass
class PrepareStats:
    """What one ``prepare`` did, for the sidecar's status and metrics."""

    staging: StagingStats = dataclasses.field(default_factory=StagingStats)
    outcome: str = "none"  # "none" (no environment needed), or an envcache.Outcome value
    pip_runs: int = 0
    seconds: float = 0.0


@dataclasses.dataclass
class PreparedEnvironment:
    staged_dir: Path
    main_session: Path | None
    env_key: EnvKey
    sys_path_entries: tuple[str, ...]
    stats: PrepareStats
    lease: EnvLease | None = None

    def activate(self) -> None:
        """Puts the environment first on ``sys.path``, with its ``.pth`` files processed.

        The environment's own link to the worker's site-packages
        (``installer.BASE_PTH``) is skipped: those are on ``sys.path`` already,
        and running their ``.pth`` files twice could install import hooks twice.
        """
        if not self.sys_path_entries:
            return
        before = list(sys.path)
        known = {os.path.normcase(os.path.abspath(p)) for p in sys.path if p}
        for entry in self.sys_path_entries:
            if os.path.normcase(entry) not in known:
                sys.path.append(entry)
                known.add(os.path.normcase(entry))
            for name in sorted(os.listdir(entry)):
                if name.endswith(".pth") and name != BASE_PTH:
                    site.addpackage(entry, name, known)  # type: ignore[attr-defined]
        added = [p for p in sys.path if p not in before]
        sys.path[:] = added + before
        importlib.invalidate_caches()

    def close(self) -> None:
        if self.lease is not None:
            self.lease.close()
            self.lease = None


def prepare(
    dependencies: Sequence[Any],
    *,
    artifact_endpoint: str,
    runner_worker_id: str,
    semi_dir: str | Path,
    cache: EnvCache,
    deadline: float,
    facts: WorkerFacts | None = None,
    installer: Installer | None = None,
    imported: frozenset[str] | None = None,
    call_timeout: float = 120.0,
) -> PreparedEnvironment:
    """Stages ``dependencies`` (``ProvisionInfo.dependencies``) and returns their environment."""
    began = time.monotonic()
    stats = PrepareStats()
    staged_dir = Path(semi_dir) / "staged"
    if not dependencies:
        return PreparedEnvironment(staged_dir, None, NO_ENVIRONMENT, (), stats)
    if not artifact_endpoint:
        raise BadArtifactError(f"stage {runner_worker_id}: the job staged {len(dependencies)} "
                               "artifact(s) but the runner gave no artifact endpoint")
    facts = facts or WorkerFacts.detect()
    artifacts = mf.parse_dependencies(dependencies)
    files = stage_artifacts(
        artifacts, staged_dir, cache.blobs,
        lambda: ArtifactClient(artifact_endpoint, runner_worker_id, call_timeout=call_timeout),
        deadline, stats.staging)
    plan = make_plan(files, facts.runtime)
    if plan.sdk is not None:
        _check_sdk(plan, staged_dir, facts.runtime.beam_version)
    main_session = staged_dir / mf.MAIN_SESSION if plan.main_session else None
    prepared = PreparedEnvironment(staged_dir, main_session, plan.key, (), stats)
    if plan.needs_environment:
        installer = installer or Installer()
        runs_before = installer.pip_runs
        lease, outcome = cache.acquire(plan.key, _builder(plan, staged_dir, installer, deadline),
                                       deadline)
        stats.pip_runs = installer.pip_runs - runs_before
        stats.outcome = str(outcome)
        prepared.lease = lease
        try:
            conflicts = find_conflicts(lease.distributions, facts.distributions,
                                       imported if imported is not None else imported_modules())
            if conflicts:
                raise conflicts[0].error(facts.runtime.beam_version)
        except BaseException:
            prepared.close()
            raise
        prepared.sys_path_entries = tuple(lease.site_packages)
    else:
        cache.evict()  # new blobs may have pushed the cache over its bound
    stats.seconds = time.monotonic() - began
    _LOG.info("stage %s: %d artifact(s) staged (%d reused, %d fetched, %d bytes), "
              "environment %s %s in %.0f ms", runner_worker_id, stats.staging.artifacts,
              stats.staging.reused, stats.staging.fetched, stats.staging.bytes_fetched,
              plan.key, stats.outcome if plan.needs_environment else "not needed",
              stats.seconds * 1000)
    return prepared


def _builder(plan: Plan, staged_dir: Path, installer: Installer,
             deadline: float) -> BuildFn:
    def build(tmp: Path, final: Path) -> dict[str, object]:
        extra_text = None
        if plan.extra_packages:
            extra_text = (staged_dir / mf.EXTRA_PACKAGES).read_text(errors="replace")
        steps = install_steps(plan, extra_text)
        return installer.build(tmp, final, steps, staged_dir, deadline)
    return build


_WHEEL_VERSION = re.compile(r"^apache_beam-([^-]+)-")


def sdk_version(path: Path) -> str:
    """The version of a staged Beam SDK (a wheel's name, or an sdist's PKG-INFO); '' if unknown."""
    match = _WHEEL_VERSION.match(path.name)
    if match:
        return match.group(1)
    try:
        with tarfile.open(path, mode="r:*") as archive:
            for member in archive:
                if member.isfile() and member.name.count("/") == 1 and \
                        member.name.endswith("/PKG-INFO"):
                    handle = archive.extractfile(member)
                    text = handle.read().decode(errors="replace") if handle else ""
                    for line in text.splitlines():
                        if line.startswith("Version:"):
                            return line.split(":", 1)[1].strip()
    except (OSError, tarfile.TarError):
        return ""
    return ""


def _check_sdk(plan: Plan, staged_dir: Path, beam_version: str) -> None:
    assert plan.sdk is not None
    error = sdk_conflict(sdk_version(staged_dir / plan.sdk.name), beam_version, plan.sdk.name)
    if error is not None:
        raise error
    _LOG.info("staged Beam SDK %s is this worker's version (%s): not installing it",
              plan.sdk.name, beam_version)


__all__ = ["Outcome", "PreparedEnvironment", "PrepareStats", "WorkerFacts", "prepare"]
