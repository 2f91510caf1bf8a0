"""Does a job's environment clash with what this worker has already imported?

Pure: no I/O. A pooled worker is forked from a process that has imported
Beam, protobuf, grpcio (and PyFlink for that flavour). Putting a job's
environment in front of ``sys.path`` changes what *later* imports find, never
a module already in ``sys.modules``: a job that needs another version of one
of those would run against the worker's copy and break in odd ways later.
Such a job is refused at StartWorker with a sentence naming the package,
both versions and what to do.

Rules (``find_conflicts``):
- a distribution the environment provides conflicts when the worker has the
  same distribution in another version *and* it is protected
  (``ALWAYS_PROTECTED``, or one of its top-level modules is imported);
- a distribution the worker does not have, or has in the same version, never
  conflicts; neither does one whose modules were never imported (the job's
  copy simply wins);
- a staged Beam SDK (``sdk_conflict``) must be the worker's Beam version.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from harness_pool.deps.errors import DependencyConflict

#: Always loaded in a pooled worker, whatever sys.modules says at the time of the check.
ALWAYS_PROTECTED = frozenset({"apache-beam", "protobuf", "grpcio", "apache-flink"})

_OWN_INTERPRETER = ("or run the job with its own interpreter (PyFlink: python.archives with a "
                    "virtual environment and python.executable inside it)")


@dataclasses.dataclass(frozen=True)
class Distribution:
    """A distribution an environment provides: normalized name, version, top-level modules."""

    name: str
    version: str
    top_levels: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Conflict:
    package: str
    job_version: str
    worker_version: str
    modules: tuple[str, ...]  # the imported top-level modules that pin the worker's version

    def describe(self, beam_version: str) -> str:
        modules = f" (modules {', '.join(self.modules)})" if self.modules else ""
        return (f"job needs {self.package} {self.job_version} but this worker's fork server "
                f"already imported {self.package} {self.worker_version}{modules}; build the job "
                f"against apache-beam=={beam_version} and its {self.package} range (this pool "
                f"has {self.package}=={self.worker_version}), {_OWN_INTERPRETER}")

    def error(self, beam_version: str) -> DependencyConflict:
        return DependencyConflict(self.describe(beam_version), self.package, self.job_version,
                                  self.worker_version)


def find_conflicts(
    provided: Iterable[Distribution],
    worker: Mapping[str, str],
    imported: frozenset[str],
    protected: frozenset[str] = ALWAYS_PROTECTED,
) -> list[Conflict]:
    out = []
    for dist in sorted(provided, key=lambda d: d.name):
        have = worker.get(dist.name)
        if have is None or have == dist.version:
            continue
        modules = tuple(sorted(m for m in dist.top_levels if m in imported))
        if dist.name in protected or modules:
            out.append(Conflict(dist.name, dist.version, have, modules))
    return out


def sdk_conflict(staged_version: str, worker_beam: str,
                 file_name: str) -> DependencyConflict | None:
    """The error for a staged Beam SDK of another version, ``None`` when it matches."""
    if staged_version == worker_beam:
        return None
    found = staged_version or "an unknown version"
    return DependencyConflict(
        f"job staged the Beam SDK {file_name} ({found}, --sdk_location) but this worker runs "
        f"apache-beam {worker_beam}; submit the job with apache-beam=={worker_beam} and "
        f"without --sdk_location, {_OWN_INTERPRETER}",
        "apache-beam", staged_version, worker_beam)
