"""An in-memory ``JobBackend`` that behaves like a Flink session cluster, and a fake clock.

Jobs move one state per poll (CREATED -> RUNNING; a stop reports the savepoint
then FINISHED), so the core's polling paths are exercised without sleeping.
Like Flink's REST API it de-duplicates savepoint trigger ids and refuses a
second job with an id it has seen.

Failure switches: ``fail_savepoints`` (next N savepoints fail),
``bounded_outcome`` (FINISHED, FAILED or NEVER), ``unreachable`` (every call
raises ``TemporaryError``), ``visible_after`` (a submitted job shows up only
after that many looks, like PyFlink's PythonDriver, which takes seconds before
Flink lists the job), ``generic_refusal`` (a duplicate job id is refused with
a bare "HTTP 400: Could not execute application", as ``/jars/{id}/run``
answers when the duplicate is detected inside the driver, instead of a
recognisable duplicate answer), ``restore_elsewhere`` (started jobs report a
different savepoint than asked). ``calls`` logs every call for assertions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from harness_pool._errors import PermanentError, TemporaryError
from harness_pool.scheduler.backends.base import DisposalResult, SavepointResult, SubmitResult
from harness_pool.scheduler.config import JobSpec
from harness_pool.scheduler.events import DisposalState, SavepointState
from harness_pool.scheduler.model import JobStatus


class FakeClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start
        self.slept = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        self.slept += max(0.0, seconds)


@dataclass
class FakeJob:
    name: str
    state: JobStatus
    savepoint: str | None
    parallelism: int | None
    polls: int = 0
    hidden_for: int = 0
    """Looks left before the job is listed (an in-flight submission)."""


@dataclass
class FakeBackend:
    fail_savepoints: int = 0
    bounded_outcome: str = "FINISHED"
    """FINISHED, FAILED or NEVER for jobs whose Flink name starts with 'bounded'."""
    unreachable: bool = False
    slots: int = 4
    visible_after: int = 0
    generic_refusal: bool = False
    restore_elsewhere: bool = False
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    triggers: dict[str, SavepointResult] = field(default_factory=dict)
    disposed: list[str] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    submissions: int = 0
    """Submissions that reached the cluster (a duplicate refused is not one)."""
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _log(self, call: str, arg: str = "") -> None:
        self.calls.append((call, arg))
        if self.unreachable:
            raise TemporaryError(f"{call}: fake Flink unreachable")

    def _job(self, job_id: str) -> FakeJob:
        if job_id not in self.jobs or self.jobs[job_id].hidden_for:
            raise PermanentError(f"job {job_id}: HTTP 404: not found")
        return self.jobs[job_id]

    def _visible(self) -> dict[str, FakeJob]:
        for j in self.jobs.values():
            if j.hidden_for:
                j.hidden_for -= 1
        return {i: j for i, j in self.jobs.items() if not j.hidden_for}

    def running(self, flink_name: str) -> list[str]:
        return [i for i, j in self.jobs.items()
                if j.name == flink_name and j.state is JobStatus.RUNNING]

    def find_running(self, job: JobSpec) -> list[str]:
        self._log("find", job.name)
        return [i for i, j in self._visible().items()
                if j.name == job.flink_name and not j.state.terminal]

    def job_state(self, job: JobSpec, job_id: str) -> JobStatus | None:
        self._log("poll-job", job_id)
        j = self._visible().get(job_id)
        if j is None:
            return None
        j.polls += 1
        if j.state is JobStatus.CREATED:
            j.state = JobStatus.RUNNING
        elif j.state is JobStatus.RUNNING and j.name.startswith("bounded") and j.polls >= 3:
            if self.bounded_outcome != "NEVER":
                j.state = JobStatus(self.bounded_outcome)
        elif j.state is JobStatus.CANCELLING:
            j.state = JobStatus.FINISHED
        return j.state

    def _savepoint(self, job_id: str, trigger_id: str, stop: bool) -> None:
        if trigger_id in self.triggers:
            return  # idempotent, like Flink's triggerId
        j = self._job(job_id)
        if j.state is not JobStatus.RUNNING:
            raise PermanentError(f"job {job_id} is {j.state.value}, not RUNNING")
        if self.fail_savepoints > 0:
            self.fail_savepoints -= 1
            self.triggers[trigger_id] = SavepointResult(SavepointState.FAILED, error="disk full")
            return
        path = f"file:/savepoints/savepoint-{next(self._seq)}"
        self.triggers[trigger_id] = SavepointResult(SavepointState.COMPLETED, location=path)
        if stop:
            j.state = JobStatus.CANCELLING  # "stopping": FINISHED on the next poll

    def stop_with_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                            target_dir: str) -> None:
        self._log("stop", job_id)
        self._savepoint(job_id, trigger_id, stop=True)

    def trigger_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                          target_dir: str) -> None:
        self._log("savepoint", job_id)
        self._savepoint(job_id, trigger_id, stop=False)

    def savepoint_status(self, job: JobSpec, job_id: str, trigger_id: str,
                         stop: bool) -> SavepointResult:
        self._log("poll-savepoint", trigger_id)
        if trigger_id not in self.triggers:
            raise PermanentError(f"trigger {trigger_id}: HTTP 404: not found")
        return self.triggers[trigger_id]

    def revert_stop(self, job: JobSpec, job_id: str, trigger_id: str) -> None:
        self._log("revert-stop", job_id)

    def submit(self, job: JobSpec, job_id: str, savepoint: str | None,
               parallelism: int | None) -> SubmitResult:
        self._log("submit", f"{job.name}:{savepoint}")
        if job_id in self.jobs:
            if self.generic_refusal:
                raise PermanentError(f"run job {job.name}: HTTP 400: Could not execute "
                                     "application.")
            return SubmitResult(job_id, already=True)
        self.submissions += 1
        restored = f"{savepoint}-elsewhere" if savepoint and self.restore_elsewhere \
            else savepoint
        self.jobs[job_id] = FakeJob(job.flink_name, JobStatus.CREATED, restored, parallelism,
                                    hidden_for=self.visible_after)
        return SubmitResult(job_id)

    def restored_from(self, job: JobSpec, job_id: str) -> str | None:
        self._log("verify", job_id)
        return self._job(job_id).savepoint

    def cancel(self, job: JobSpec, job_id: str) -> None:
        self._log("cancel", job_id)
        self._job(job_id).state = JobStatus.CANCELED

    def free_slots(self) -> int:
        self._log("slots")
        return self.slots - len([j for j in self.jobs.values()
                                 if j.state is JobStatus.RUNNING])

    def dispose(self, path: str, ref: str) -> DisposalResult:
        self._log("dispose", path)
        self.disposed.append(path)
        return DisposalResult(DisposalState.DONE)
