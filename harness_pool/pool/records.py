"""What the live pool reports: assignment records and their outcomes, and the
seams that hear about them (metrics observer, per-slot seat hooks, the runner
watch's view of a held stage).

Plain data and protocols, no locks: ``Pool`` (pool.py) creates and settles
records under its own condition variable and calls the observers outside it.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Protocol

from harness_pool._errors import clip
from harness_pool.pool.core import PoolId
from harness_pool.v1 import pool_pb2


class Observer(Protocol):
    """Receives what metrics need; ``NullObserver`` ignores it all."""

    def pool_changed(self, counts: dict[str, int]) -> None: ...

    def assigned(self, wait_seconds: float, ready_seconds: float) -> None: ...

    def start_error(self, reason: str) -> None: ...

    def worker_exited(self, pool_id: str, code: int | None, served: int) -> None: ...

    def worker_warm(self, seconds: float) -> None: ...

    def stage_prepared(self, report: pool_pb2.PrepareReport) -> None: ...

    def dependencies_failed(self) -> None: ...


class NullObserver:
    def pool_changed(self, counts: dict[str, int]) -> None:
        pass

    def assigned(self, wait_seconds: float, ready_seconds: float) -> None:
        pass

    def start_error(self, reason: str) -> None:
        pass

    def worker_exited(self, pool_id: str, code: int | None, served: int) -> None:
        pass

    def worker_warm(self, seconds: float) -> None:
        pass

    def stage_prepared(self, report: pool_pb2.PrepareReport) -> None:
        pass

    def dependencies_failed(self) -> None:
        pass


class SeatHooks(Protocol):
    """Hears seats taken and left (the per-slot usage sampler); calls must be quick."""

    def seated(self, pool_id: str, seat: int, pid: int) -> None: ...

    def unseated(self, pool_id: str) -> None: ...


class NullSeatHooks:
    def seated(self, pool_id: str, seat: int, pid: int) -> None:
        pass

    def unseated(self, pool_id: str) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class Held:
    """A worker holding a stage, as the runner watch sees it."""

    pool_id: PoolId
    runner_worker_id: str
    control_endpoint: str


class Outcome(enum.Enum):
    """How an assignment went (``AssignmentRecord.outcome``)."""

    STARTING = "starting"  # assigned; the harness is not connected to the runner yet
    RUNNING = "running"  # connected; serving the stage
    FINISHED = "finished"  # the runner closed the stage normally
    FAILED = "failed"  # the harness or its process failed mid-stage
    STOPPED = "stopped"  # StopWorker ended it
    START_FAILED = "start_failed"  # never got connected (error, timeout, death)
    CANCELLED = "cancelled"  # the runner gave up on its StartWorker before it was ready

    def __str__(self) -> str:
        return self.value

    @property
    def live(self) -> bool:
        return self in (Outcome.STARTING, Outcome.RUNNING)


@dataclasses.dataclass
class Record:
    """One assignment, for status and the demo's "time to a ready worker"."""

    pool_id: str
    runner_worker_id: str
    pid: int
    started_at: float  # wall clock
    time_to_ready: float = 0.0
    ended_at: float = 0.0
    outcome: Outcome = Outcome.STARTING
    detail: str = ""
    endpoint: str = ""  # the runner's control endpoint

    def end(self, outcome: Outcome, detail: str = "") -> None:
        """Settles a live record (a settled one keeps its first outcome)."""
        if self.outcome.live:
            self.outcome = outcome
            self.detail = clip(detail or self.detail)

    def to_proto(self) -> pool_pb2.AssignmentRecord:
        return pool_pb2.AssignmentRecord(
            pool_id=self.pool_id, runner_worker_id=self.runner_worker_id, pid=self.pid,
            time_to_ready_seconds=self.time_to_ready, started_at_unix=self.started_at,
            ended_at_unix=self.ended_at, outcome=self.outcome.value, detail=self.detail,
        )
