"""The one interface every backend implements, and the results it returns.

A backend translates its system's errors at the boundary: ``TemporaryError``
(unreachable, 5xx: worth a retry) or ``PermanentError`` (unknown job,
rejected request). ``job_id`` is whatever the backend identifies a running
job by: a Flink JobID, or a resource name for the operator and Ververica.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from harness_pool.scheduler.config import JobSpec


@dataclass(frozen=True)
class SavepointResult:
    status: str
    """IN_PROGRESS, COMPLETED or FAILED."""
    location: str = ""
    error: str = ""


@dataclass(frozen=True)
class SubmitResult:
    job_id: str
    duplicates: tuple[str, ...] = ()
    """Ids of other running copies; when non-empty nothing was submitted."""


class JobBackend(Protocol):
    def find_running(self, job: JobSpec) -> list[str]: ...

    def job_state(self, job: JobSpec, job_id: str) -> str | None: ...

    def stop_with_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                            target_dir: str) -> None: ...

    def trigger_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                          target_dir: str) -> None: ...

    def savepoint_status(self, job: JobSpec, job_id: str, trigger_id: str) -> SavepointResult: ...

    def submit(self, job: JobSpec, job_id: str, savepoint: str | None,
               parallelism: int | None) -> SubmitResult: ...

    def cancel(self, job: JobSpec, job_id: str) -> None: ...

    def free_slots(self) -> int: ...

    def dispose(self, path: str) -> None: ...
