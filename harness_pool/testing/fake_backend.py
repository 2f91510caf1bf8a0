"""An in-memory ``JobBackend`` that behaves like a Flink session cluster, and a fake clock.

Jobs move one state per poll (CREATED -> RUNNING; a stop reports the savepoint
then FINISHED), so the core's polling paths are exercised without sleeping.
Failure switches: ``fail_savepoints`` (next N savepoints fail),
``bounded_outcome`` (FINISHED, FAILED or never), ``unreachable`` (every call
raises ``TemporaryError``). ``calls`` logs every call for assertions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from harness_pool._errors import PermanentError, TemporaryError
from harness_pool.scheduler.backends.base import SavepointResult, SubmitResult
from harness_pool.scheduler.config import JobSpec


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
    state: str
    savepoint: str | None
    parallelism: int | None
    polls: int = 0


@dataclass
class FakeBackend:
    fail_savepoints: int = 0
    bounded_outcome: str = "FINISHED"
    """FINISHED, FAILED or NEVER for jobs whose Flink name starts with 'bounded'."""
    unreachable: bool = False
    slots: int = 4
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    triggers: dict[str, SavepointResult] = field(default_factory=dict)
    disposed: list[str] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _log(self, call: str, arg: str = "") -> None:
        self.calls.append((call, arg))
        if self.unreachable:
            raise TemporaryError(f"{call}: fake Flink unreachable")

    def _job(self, job_id: str) -> FakeJob:
        if job_id not in self.jobs:
            raise PermanentError(f"job {job_id}: HTTP 404: not found")
        return self.jobs[job_id]

    def running(self, flink_name: str) -> list[str]:
        return [i for i, j in self.jobs.items() if j.name == flink_name and j.state == "RUNNING"]

    def find_running(self, job: JobSpec) -> list[str]:
        self._log("find", job.name)
        return [i for i, j in self.jobs.items()
                if j.name == job.flink_name and j.state in ("CREATED", "RUNNING")]

    def job_state(self, job: JobSpec, job_id: str) -> str | None:
        self._log("poll-job", job_id)
        j = self.jobs.get(job_id)
        if j is None:
            return None
        j.polls += 1
        if j.state == "CREATED":
            j.state = "RUNNING"
        elif j.state == "RUNNING" and j.name.startswith("bounded") and j.polls >= 3:
            if self.bounded_outcome != "NEVER":
                j.state = self.bounded_outcome
        elif j.state == "STOPPING":
            j.state = "FINISHED"
        return j.state

    def _savepoint(self, job_id: str, trigger_id: str, stop: bool) -> None:
        j = self._job(job_id)
        if trigger_id in self.triggers:
            return  # idempotent, like Flink's triggerId
        if j.state != "RUNNING":
            raise PermanentError(f"job {job_id} is {j.state}, not RUNNING")
        if self.fail_savepoints > 0:
            self.fail_savepoints -= 1
            self.triggers[trigger_id] = SavepointResult("FAILED", error="disk full")
            return
        path = f"file:/savepoints/savepoint-{next(self._seq)}"
        self.triggers[trigger_id] = SavepointResult("COMPLETED", location=path)
        if stop:
            j.state = "STOPPING"

    def stop_with_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                            target_dir: str) -> None:
        self._log("stop", job_id)
        self._savepoint(job_id, trigger_id, stop=True)

    def trigger_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                          target_dir: str) -> None:
        self._log("savepoint", job_id)
        self._savepoint(job_id, trigger_id, stop=False)

    def savepoint_status(self, job: JobSpec, job_id: str, trigger_id: str) -> SavepointResult:
        self._log("poll-savepoint", trigger_id)
        if trigger_id not in self.triggers:
            raise PermanentError(f"trigger {trigger_id}: HTTP 404: not found")
        return self.triggers[trigger_id]

    def submit(self, job: JobSpec, job_id: str, savepoint: str | None,
               parallelism: int | None) -> SubmitResult:
        self._log("submit", f"{job.name}:{savepoint}")
        if job_id in self.jobs:
            return SubmitResult(job_id)
        others = self.find_running(job)
        if others:
            return SubmitResult(job_id, duplicates=tuple(others))
        self.jobs[job_id] = FakeJob(job.flink_name, "CREATED", savepoint, parallelism)
        return SubmitResult(job_id)

    def cancel(self, job: JobSpec, job_id: str) -> None:
        self._log("cancel", job_id)
        self._job(job_id).state = "CANCELED"

    def free_slots(self) -> int:
        self._log("slots")
        return self.slots - len([j for j in self.jobs.values() if j.state == "RUNNING"])

    def dispose(self, path: str) -> None:
        self._log("dispose", path)
        self.disposed.append(path)
