"""The one interface every backend implements, and the results it returns.

A backend translates its system at the boundary (``backends._boundary``):
answers become these values, failures ``TemporaryError`` (worth asking again)
or ``PermanentError``. A backend *decides nothing*: it never retries on its
own account, never writes while it is asked to report (a status poll is a
read), and never chooses what comes next; the core does, from what the
backend reported. ``job_id`` is whatever the backend identifies a running job
by: a Flink JobID, or a resource name for the operator and Ververica (where
the derived job id of a submission is recorded in an annotation, so a
restarted scheduler recognises its own submission).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from harness_pool.scheduler.config import JobSpec
from harness_pool.scheduler.events import DisposalState, SavepointState
from harness_pool.scheduler.model import JobStatus


@dataclass(frozen=True)
class SavepointResult:
    state: SavepointState
    location: str = ""
    error: str = ""
    ref: str = ""
    """The backend's handle on the savepoint, kept for retention."""


@dataclass(frozen=True)
class SubmitResult:
    job_id: str
    already: bool = False
    """True when the backend refused because this very job id was submitted before."""


@dataclass(frozen=True)
class DisposalResult:
    state: DisposalState
    detail: str = ""


class JobBackend(Protocol):
    def find_running(self, job: JobSpec) -> list[str]:
        """Ids of the copies of ``job`` that are not globally terminal."""
        ...

    def job_state(self, job: JobSpec, job_id: str) -> JobStatus | None: ...

    def stop_with_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                            target_dir: str) -> None: ...

    def trigger_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                          target_dir: str) -> None: ...

    def savepoint_status(self, job: JobSpec, job_id: str, trigger_id: str,
                         stop: bool) -> SavepointResult: ...

    def revert_stop(self, job: JobSpec, job_id: str, trigger_id: str) -> None:
        """A stop's savepoint failed: make sure the job is asked to keep running."""
        ...

    def submit(self, job: JobSpec, job_id: str, savepoint: str | None,
               parallelism: int | None) -> SubmitResult:
        """Send the submission (no savepoint: start with empty state, on every backend)."""
        ...

    def restored_from(self, job: JobSpec, job_id: str) -> str | None:
        """The savepoint the running job reports it restored from (None: none reported)."""
        ...

    def cancel(self, job: JobSpec, job_id: str) -> None: ...

    def free_slots(self) -> int: ...

    def dispose(self, path: str, ref: str) -> DisposalResult: ...
