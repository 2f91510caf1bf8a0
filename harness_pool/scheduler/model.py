"""Values of the scheduler: lifecycle enums with transition tables, state, events, effects.

Everything here is plain data: no I/O, no clock. ``CycleState`` is what the
state store persists (``to_dict``/``from_dict`` round-trip through JSON);
``Event`` is what the shell observed; ``Effect`` is what the core asks the shell
to do next. Ids the core needs before a side effect (savepoint trigger ids,
job ids) are derived deterministically from the cycle id, step and attempt,
so a restarted scheduler re-issues the *same* request (Flink de-duplicates
trigger ids and refuses a second job with the same id).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, NewType

from harness_pool._errors import IllegalTransition

JobId = NewType("JobId", str)
TriggerId = NewType("TriggerId", str)


class CycleStatus(str, enum.Enum):
    IDLE = "IDLE"  # no cycle in progress; waiting for the schedule
    RUNNING = "RUNNING"  # executing the configured steps in order
    RECOVERING = "RECOVERING"  # a step failed: resuming every job this cycle stopped
    FINISHING = "FINISHING"  # steps done: applying savepoint retention, then IDLE


CYCLE_TRANSITIONS: dict[CycleStatus, frozenset[CycleStatus]] = {
    CycleStatus.IDLE: frozenset({CycleStatus.RUNNING}),
    CycleStatus.RUNNING: frozenset({CycleStatus.RECOVERING, CycleStatus.FINISHING}),
    CycleStatus.RECOVERING: frozenset({CycleStatus.FINISHING}),
    CycleStatus.FINISHING: frozenset({CycleStatus.IDLE}),
}


class Phase(str, enum.Enum):
    START = "START"  # step not begun; nothing requested yet
    FINDING = "FINDING"  # looking for the running copy of the job by its Flink name
    TRIGGERING = "TRIGGERING"  # trigger id persisted; (re)issuing stop/savepoint request
    POLLING = "POLLING"  # savepoint requested; polling its trigger
    CHECKING = "CHECKING"  # savepoint failed; checking the job still runs before a retry
    BACKOFF = "BACKOFF"  # waiting before the next savepoint attempt
    STOPPING = "STOPPING"  # savepoint done; waiting for the job to report FINISHED
    SLOTS = "SLOTS"  # asking the cluster how many slots are free (rescale)
    SUBMITTING = "SUBMITTING"  # job id persisted; (re)issuing the submission
    STARTING = "STARTING"  # submitted; waiting for RUNNING
    WAITING = "WAITING"  # waiting for a target job state (wait step)
    CANCELLING = "CANCELLING"  # cancel requested; waiting for CANCELED
    ABORTING = "ABORTING"  # sending a cancel (cancel step, or a timed-out wait before recovery)
    SLEEPING = "SLEEPING"  # sleep step
    DISPOSING = "DISPOSING"  # retention: disposing of old savepoints


PHASE_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.START: frozenset(Phase),
    Phase.FINDING: frozenset({Phase.TRIGGERING, Phase.WAITING, Phase.ABORTING, Phase.START}),
    Phase.TRIGGERING: frozenset({Phase.POLLING, Phase.START}),
    Phase.POLLING: frozenset({Phase.STOPPING, Phase.CHECKING, Phase.START}),
    Phase.CHECKING: frozenset({Phase.BACKOFF, Phase.START}),
    Phase.BACKOFF: frozenset({Phase.TRIGGERING, Phase.START}),
    Phase.STOPPING: frozenset({Phase.SLOTS, Phase.SUBMITTING, Phase.START}),
    Phase.SLOTS: frozenset({Phase.SUBMITTING, Phase.START}),
    Phase.SUBMITTING: frozenset({Phase.STARTING, Phase.START}),
    Phase.STARTING: frozenset({Phase.START}),
    Phase.WAITING: frozenset({Phase.ABORTING, Phase.START}),
    Phase.CANCELLING: frozenset({Phase.START}),
    Phase.ABORTING: frozenset({Phase.CANCELLING, Phase.START}),
    Phase.SLEEPING: frozenset({Phase.START}),
    Phase.DISPOSING: frozenset({Phase.START}),
}


class SavepointStatus(str, enum.Enum):
    COMPLETED = "COMPLETED"  # taken and readable; may be resumed from
    DISPOSED = "DISPOSED"  # removed by retention or by hand


SAVEPOINT_TRANSITIONS = {SavepointStatus.COMPLETED: frozenset({SavepointStatus.DISPOSED}),
                         SavepointStatus.DISPOSED: frozenset()}


def check(table: dict[Any, frozenset[Any]], what: str, current: Any, wanted: Any) -> None:
    """Raise ``IllegalTransition`` naming both states unless the table allows the move."""
    if current != wanted and wanted not in table[current]:
        raise IllegalTransition(what, current.value, wanted.value)


def derive_id(*parts: object) -> str:
    """A 32-hex id (Flink's JobID / TriggerId format) derived from ``parts``."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


@dataclass
class SavepointRecord:
    job: str
    path: str
    taken_at: float
    cycle_id: str
    status: SavepointStatus = SavepointStatus.COMPLETED


@dataclass
class CycleSummary:
    cycle_id: str
    started_at: float
    ended_at: float
    ok: bool
    failure: str = ""
    downtime: dict[str, float] = field(default_factory=dict)


@dataclass
class CycleState:
    """The scheduler's durable state: written before every side effect."""

    status: CycleStatus = CycleStatus.IDLE
    cycle_id: str = ""
    cycle_started: float = 0.0
    step_index: int = 0
    phase: Phase = Phase.START
    step_started: float = 0.0
    deadline: float = 0.0
    attempt: int = 0
    polls: int = 0
    trigger_id: str = ""
    pending_job_id: str = ""
    parallelism: int | None = None
    jobs: dict[str, str] = field(default_factory=dict)
    """Job name -> id of its running copy, as far as the scheduler knows."""
    taken: dict[str, str] = field(default_factory=dict)
    """Job name -> savepoint this cycle took of it (what resume uses)."""
    stopped_at: dict[str, float] = field(default_factory=dict)
    """Job name -> when the stop was requested (start of its downtime)."""
    downtime: dict[str, float] = field(default_factory=dict)
    recovery: list[str] = field(default_factory=list)
    failure: str = ""
    last_error: str = ""
    """Why the last savepoint attempt failed (kept for the final message)."""
    history: list[SavepointRecord] = field(default_factory=list)
    cycles: list[CycleSummary] = field(default_factory=list)
    savepoint_failures: int = 0

    def move(self, phase: Phase) -> None:
        check(PHASE_TRANSITIONS, "step phase", self.phase, phase)
        if phase is not self.phase:
            self.polls = 0
        self.phase = phase

    def set_status(self, status: CycleStatus) -> None:
        check(CYCLE_TRANSITIONS, "cycle", self.status, status)
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["phase"] = self.phase.value
        for record in data["history"]:
            record["status"] = record["status"].value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CycleState:
        data = dict(data)
        data["status"] = CycleStatus(data["status"])
        data["phase"] = Phase(data["phase"])
        data["history"] = [
            SavepointRecord(**{**r, "status": SavepointStatus(r["status"])})
            for r in data.get("history", [])
        ]
        data["cycles"] = [CycleSummary(**c) for c in data.get("cycles", [])]
        return cls(**data)


# -- events: what the shell observed -------------------------------------------------


@dataclass(frozen=True)
class Begin:
    """Start (or, after a restart, re-enter) the current phase."""


@dataclass(frozen=True)
class Found:
    job_ids: tuple[str, ...]


@dataclass(frozen=True)
class Accepted:
    """The backend accepted the request (trigger, cancel)."""


@dataclass(frozen=True)
class SavepointPending:
    pass


@dataclass(frozen=True)
class SavepointDone:
    location: str


@dataclass(frozen=True)
class SavepointFailed:
    reason: str


@dataclass(frozen=True)
class JobState:
    state: str | None
    """Flink job state (RUNNING, FINISHED, ...), or None when the job does not exist."""


@dataclass(frozen=True)
class Submitted:
    job_id: str


@dataclass(frozen=True)
class Duplicate:
    job_ids: tuple[str, ...]


@dataclass(frozen=True)
class Slots:
    free: int


@dataclass(frozen=True)
class Disposed:
    paths: tuple[str, ...]
    failed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tick:
    """Time passed (after a sleep or backoff effect)."""


@dataclass(frozen=True)
class Failed:
    reason: str
    temporary: bool


Event = (Begin | Found | Accepted | SavepointPending | SavepointDone | SavepointFailed
         | JobState | Submitted | Duplicate | Slots | Disposed | Tick | Failed)


# -- effects: what the core asks the shell to do -------------------------------------


@dataclass(frozen=True)
class Effect:
    kind: str
    """find | stop | savepoint | poll-savepoint | submit | poll-job | cancel | slots |
    dispose | sleep | idle."""
    job: str = ""
    job_id: str = ""
    trigger_id: str = ""
    savepoint: str = ""
    parallelism: int | None = None
    paths: tuple[str, ...] = ()
    delay: float = 0.0
    """Seconds to wait before doing it (poll interval, backoff, sleep)."""


@dataclass(frozen=True)
class Decision:
    state: CycleState
    effect: Effect
    note: str = ""
    """One sentence for the log: what was decided, about whom, what comes next."""
