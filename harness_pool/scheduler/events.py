"""What the shell observed (events) and what the core asks it to do (effects).

Plain frozen data. Every effect kind is an ``EffectKind``; the runner's
executor dispatches on it exhaustively, and each kind answers with the events
listed next to it (or ``Failed`` when the backend call failed).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from harness_pool.scheduler.model import CycleState, JobStatus


class EffectKind(str, enum.Enum):
    FIND = "find"  # -> Found: running copies of the job, by Flink name
    STOP = "stop"  # -> Accepted: stop with savepoint (trigger id)
    SAVEPOINT = "savepoint"  # -> Accepted: savepoint, the job keeps running (trigger id)
    POLL_SAVEPOINT = "poll-savepoint"  # -> SavepointPending | SavepointDone | SavepointFailed
    REVERT_STOP = "revert-stop"  # -> Accepted: a stop's savepoint failed; keep the job running
    PROBE = "probe"  # -> Probed: does the derived job id exist, do other copies run?
    SUBMIT = "submit"  # -> Submitted | AlreadySubmitted
    POLL_JOB = "poll-job"  # -> JobState
    VERIFY = "verify"  # -> Restored: which savepoint the job restored from
    CANCEL = "cancel"  # -> Accepted
    SLOTS = "slots"  # -> Slots
    DISPOSE = "dispose"  # -> Disposed
    SLEEP = "sleep"  # -> Tick
    IDLE = "idle"  # nothing to do (no cycle in progress)


class SavepointState(str, enum.Enum):
    """A savepoint as the backend reports it."""

    PENDING = "PENDING"  # requested, not finished
    COMPLETED = "COMPLETED"  # taken; ``location`` is its path
    FAILED = "FAILED"  # will not complete; ``error`` says why


class DisposalState(str, enum.Enum):
    """A disposal as the backend reports it (deletion is asynchronous on some)."""

    DONE = "DONE"  # gone (or was never there)
    PENDING = "PENDING"  # deletion accepted, still running; checked again next cycle
    FAILED = "FAILED"  # the backend could not delete it; retried next cycle


# -- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Begin:
    """Start (or, after a restart, re-enter) the current phase."""


@dataclass(frozen=True)
class Found:
    job_ids: tuple[str, ...]


@dataclass(frozen=True)
class Accepted:
    """The backend accepted the request (trigger, cancel, revert)."""


@dataclass(frozen=True)
class SavepointPending:
    pass


@dataclass(frozen=True)
class SavepointDone:
    location: str
    ref: str = ""
    """The backend's handle on the savepoint (for retention)."""


@dataclass(frozen=True)
class SavepointFailed:
    reason: str


@dataclass(frozen=True)
class JobState:
    state: JobStatus | None
    """The job's state, or None when no job has that id."""


@dataclass(frozen=True)
class Probed:
    state: JobStatus | None
    """State of the derived job id (None: not submitted, or not visible yet)."""
    others: tuple[str, ...]
    """Running copies of the job under other ids."""


@dataclass(frozen=True)
class Submitted:
    job_id: str


@dataclass(frozen=True)
class AlreadySubmitted:
    """The backend refused the submission because this very job id exists already."""

    job_id: str


@dataclass(frozen=True)
class Restored:
    path: str | None
    """The savepoint the job reports it restored from (None: none, or not reported yet)."""


@dataclass(frozen=True)
class Slots:
    free: int


@dataclass(frozen=True)
class Disposed:
    results: tuple[tuple[str, DisposalState, str], ...]
    """(path, outcome, detail) per savepoint asked for."""


@dataclass(frozen=True)
class Tick:
    """Time passed (after a sleep or backoff effect)."""


@dataclass(frozen=True)
class Failed:
    reason: str
    temporary: bool


Event = (Begin | Found | Accepted | SavepointPending | SavepointDone | SavepointFailed
         | JobState | Probed | Submitted | AlreadySubmitted | Restored | Slots | Disposed
         | Tick | Failed)


# -- effects --------------------------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    kind: EffectKind
    job: str = ""
    job_id: str = ""
    trigger_id: str = ""
    savepoint: str = ""
    parallelism: int | None = None
    stop: bool = False
    """POLL_SAVEPOINT: the savepoint of a stop (suspend, rescale), not a savepoint step."""
    disposals: tuple[tuple[str, str], ...] = ()
    """(path, ref) of each savepoint to dispose of."""
    delay: float = 0.0
    """Seconds to wait before doing it (poll interval, backoff, sleep)."""


IDLE = Effect(EffectKind.IDLE)


@dataclass(frozen=True)
class Decision:
    state: CycleState
    effect: Effect
    note: str = ""
    """One sentence for the log: what was decided, about whom, what comes next."""
