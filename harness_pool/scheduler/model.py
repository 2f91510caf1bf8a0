"""Values of the scheduler: lifecycle enums with transition tables, and the durable state.

Everything here is plain data: no I/O, no clock. ``CycleState`` is what the
state store persists (``to_dict``/``from_dict`` round-trip through JSON).
Ids the core needs before a side effect (savepoint trigger ids, job ids) are
derived deterministically from the cycle id, step and attempt, so a restarted
scheduler re-issues the *same* request (Flink de-duplicates trigger ids and
refuses a second job with the same id; the operator and Ververica backends
recognise their own annotations).

A cycle runs under the ``Plan`` recorded when it started (its steps, jobs and
savepoint policy): a cycle file edited mid-cycle takes effect at the next
cycle, never half-way through one.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NewType, NoReturn

from harness_pool._errors import IllegalTransition
from harness_pool.scheduler.config import Action, CycleConfig, JobSpec, SavepointPolicy, Step

JobId = NewType("JobId", str)
TriggerId = NewType("TriggerId", str)


class JobStatus(str, enum.Enum):
    """The one set of Flink job states (``org.apache.flink.api.common.JobStatus``).

    Backends map their own vocabulary onto it (the operator's RECONCILING, a
    Ververica deployment's TRANSITIONING, ...); ``None`` stands for "no such job".
    """

    INITIALIZING = "INITIALIZING"  # submitted, JobMaster being created
    CREATED = "CREATED"  # JobMaster up, tasks not yet scheduled
    RUNNING = "RUNNING"  # tasks scheduled (may still be deploying)
    FAILING = "FAILING"  # failing; will restart or fail
    FAILED = "FAILED"  # globally terminal: failed for good
    CANCELLING = "CANCELLING"  # cancel requested
    CANCELED = "CANCELED"  # globally terminal: cancelled
    FINISHED = "FINISHED"  # globally terminal: ended (bounded end, or stopped with savepoint)
    RESTARTING = "RESTARTING"  # restarting after a failure
    SUSPENDED = "SUSPENDED"  # locally terminal (JobManager lost leadership); not the end
    RECONCILING = "RECONCILING"  # a new JobManager is taking the job over

    @property
    def terminal(self) -> bool:
        """Globally terminal: the job will never run again under this id."""
        return self in _TERMINAL

    @property
    def settling(self) -> bool:
        """On its way to RUNNING (or back to it after a hiccup)."""
        return self in _SETTLING

    @classmethod
    def parse(cls, value: object) -> JobStatus:
        try:
            return cls(str(value).upper())
        except ValueError:
            raise ValueError(f"unknown Flink job state {value!r}") from None


_TERMINAL = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED})
_SETTLING = frozenset({JobStatus.INITIALIZING, JobStatus.CREATED, JobStatus.RECONCILING,
                       JobStatus.RESTARTING})
ACTIVE = frozenset(JobStatus) - _TERMINAL
"""A copy in one of these states counts as a running copy (never start a second one)."""


class CycleStatus(str, enum.Enum):
    IDLE = "IDLE"  # no cycle in progress; waiting for the schedule or a request
    RUNNING = "RUNNING"  # executing the plan's steps in order
    RECOVERING = "RECOVERING"  # a step failed: resuming every job this cycle stopped
    FINISHING = "FINISHING"  # steps done: applying savepoint retention, then IDLE


CYCLE_TRANSITIONS: dict[CycleStatus, frozenset[CycleStatus]] = {
    CycleStatus.IDLE: frozenset({CycleStatus.RUNNING}),
    CycleStatus.RUNNING: frozenset({CycleStatus.RECOVERING, CycleStatus.FINISHING}),
    CycleStatus.RECOVERING: frozenset({CycleStatus.FINISHING}),
    CycleStatus.FINISHING: frozenset({CycleStatus.IDLE}),
}


class CycleKind(str, enum.Enum):
    SCHEDULED = "SCHEDULED"  # the cycle file's steps (schedule, or `scheduler once`)
    MANUAL = "MANUAL"  # one manual request (savepoints trigger|resume|dispose)


class Phase(str, enum.Enum):
    START = "START"  # step not begun; nothing requested yet
    FINDING = "FINDING"  # looking for the running copy of the job by its Flink name
    TRIGGERING = "TRIGGERING"  # trigger id persisted; (re)issuing the stop/savepoint request
    POLLING = "POLLING"  # savepoint requested; polling its trigger
    REVERTING = "REVERTING"  # a stop's savepoint failed: asking the backend to keep the job up
    CHECKING = "CHECKING"  # savepoint failed; checking the job still runs before a retry
    BACKOFF = "BACKOFF"  # waiting before the next savepoint attempt
    STOPPING = "STOPPING"  # savepoint done; waiting for the job to report FINISHED
    SLOTS = "SLOTS"  # asking the cluster how many slots are free (rescale)
    PROBING = "PROBING"  # job id persisted; does it exist already, does another copy run?
    SUBMITTING = "SUBMITTING"  # (re)issuing the submission; from here a send may be in flight
    CONFIRMING = "CONFIRMING"  # a send may be in flight: waiting (grace) for its job to appear
    STARTING = "STARTING"  # submitted; waiting for RUNNING
    VERIFYING = "VERIFYING"  # RUNNING; checking the job restored from the requested savepoint
    WAITING = "WAITING"  # waiting for a target job state (wait step)
    ABORTING = "ABORTING"  # sending a cancel (cancel step, or a timed-out wait before recovery)
    CANCELLING = "CANCELLING"  # cancel requested; waiting for CANCELED
    SLEEPING = "SLEEPING"  # sleep step


PHASE_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.START: frozenset(Phase),
    Phase.FINDING: frozenset({Phase.TRIGGERING, Phase.WAITING, Phase.ABORTING, Phase.START}),
    Phase.TRIGGERING: frozenset({Phase.POLLING, Phase.START}),
    Phase.POLLING: frozenset({Phase.STOPPING, Phase.REVERTING, Phase.CHECKING, Phase.START}),
    Phase.REVERTING: frozenset({Phase.CHECKING, Phase.START}),
    Phase.CHECKING: frozenset({Phase.BACKOFF, Phase.START}),
    Phase.BACKOFF: frozenset({Phase.TRIGGERING, Phase.START}),
    Phase.STOPPING: frozenset({Phase.SLOTS, Phase.PROBING, Phase.START}),
    Phase.SLOTS: frozenset({Phase.PROBING, Phase.START}),
    Phase.PROBING: frozenset({Phase.SUBMITTING, Phase.STARTING, Phase.START}),
    Phase.SUBMITTING: frozenset({Phase.STARTING, Phase.CONFIRMING, Phase.START}),
    Phase.CONFIRMING: frozenset({Phase.STARTING, Phase.PROBING, Phase.START}),
    Phase.STARTING: frozenset({Phase.VERIFYING, Phase.START}),
    Phase.VERIFYING: frozenset({Phase.START}),
    Phase.WAITING: frozenset({Phase.ABORTING, Phase.START}),
    Phase.ABORTING: frozenset({Phase.CANCELLING, Phase.START}),
    Phase.CANCELLING: frozenset({Phase.START}),
    Phase.SLEEPING: frozenset({Phase.START}),
}


class SavepointStatus(str, enum.Enum):
    COMPLETED = "COMPLETED"  # taken and readable; may be resumed from
    DISPOSING = "DISPOSING"  # retention (or a manual dispose) asked the backend to remove it
    DISPOSED = "DISPOSED"  # removed; dropped from the history when the cycle ends


SAVEPOINT_TRANSITIONS: dict[SavepointStatus, frozenset[SavepointStatus]] = {
    SavepointStatus.COMPLETED: frozenset({SavepointStatus.DISPOSING}),
    SavepointStatus.DISPOSING: frozenset({SavepointStatus.DISPOSED}),
    SavepointStatus.DISPOSED: frozenset(),
}


class RequestKind(str, enum.Enum):
    SAVEPOINT = "savepoint"  # take a savepoint of a running job (savepoints trigger)
    RESUME = "resume"  # start a job from a savepoint (savepoints resume)
    DISPOSE = "dispose"  # dispose of one savepoint (savepoints dispose)


class RequestStatus(str, enum.Enum):
    QUEUED = "QUEUED"  # accepted into the state; runs when no cycle is in progress
    RUNNING = "RUNNING"  # its manual cycle is in progress
    DONE = "DONE"  # finished; ``result`` says what it did
    FAILED = "FAILED"  # refused or failed; ``result`` says why


REQUEST_TRANSITIONS: dict[RequestStatus, frozenset[RequestStatus]] = {
    RequestStatus.QUEUED: frozenset({RequestStatus.RUNNING, RequestStatus.FAILED}),
    RequestStatus.RUNNING: frozenset({RequestStatus.DONE, RequestStatus.FAILED}),
    RequestStatus.DONE: frozenset(),
    RequestStatus.FAILED: frozenset(),
}


def check(table: dict[Any, frozenset[Any]], what: str, current: Any, wanted: Any) -> None:
    """Raise ``IllegalTransition`` naming both states unless the table allows the move."""
    if current != wanted and wanted not in table[current]:
        raise IllegalTransition(what, current.value, wanted.value)


def unreachable(value: NoReturn) -> NoReturn:
    """Exhaustive dispatch over an enum: mypy rejects a call reachable by any member."""
    raise AssertionError(f"unhandled value {value!r}")


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
    ref: str = ""
    """The backend's handle on it (FlinkStateSnapshot name, Ververica savepoint id)."""

    def move(self, status: SavepointStatus) -> None:
        check(SAVEPOINT_TRANSITIONS, f"savepoint {self.path}", self.status, status)
        self.status = status


@dataclass
class Request:
    """A manual action asked for from outside the run loop (``harness-pool savepoints ...``)."""

    id: str
    kind: RequestKind
    job: str = ""
    path: str = ""
    submitted_at: float = 0.0
    status: RequestStatus = RequestStatus.QUEUED
    result: str = ""
    """The savepoint path (savepoint), the job id (resume), or why it failed."""
    finished_at: float = 0.0

    def move(self, status: RequestStatus, result: str = "") -> None:
        check(REQUEST_TRANSITIONS, f"request {self.id}", self.status, status)
        self.status = status
        self.result = result or self.result

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"], data["status"] = self.kind.value, self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Request:
        return cls(**{**data, "kind": RequestKind(data["kind"]),
                      "status": RequestStatus(data.get("status", "QUEUED"))})


@dataclass
class CycleSummary:
    cycle_id: str
    started_at: float
    ended_at: float
    ok: bool
    failure: str = ""
    downtime: dict[str, float] = field(default_factory=dict)
    kind: CycleKind = CycleKind.SCHEDULED


@dataclass(frozen=True)
class Plan:
    """What a cycle executes, frozen when it starts."""

    steps: tuple[Step, ...]
    jobs: dict[str, JobSpec]
    savepoints: SavepointPolicy

    @classmethod
    def of(cls, cfg: CycleConfig, steps: tuple[Step, ...] | None = None) -> Plan:
        chosen = cfg.steps if steps is None else steps
        names = {s.job for s in chosen if s.job}
        return cls(chosen, {n: j for n, j in cfg.jobs.items() if n in names}, cfg.savepoints)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [{**asdict(s), "action": s.action.value} for s in self.steps],
                "jobs": {n: {**asdict(j), "args": list(j.args)} for n, j in self.jobs.items()},
                "savepoints": asdict(self.savepoints)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        steps = tuple(Step(**{**s, "action": Action(s["action"])}) for s in data["steps"])
        jobs = {n: JobSpec(**{**j, "args": tuple(j.get("args", ()))})
                for n, j in data["jobs"].items()}
        return cls(steps, jobs, SavepointPolicy(**data["savepoints"]))


KEEP_REQUESTS = 20


@dataclass
class CycleState:
    """The scheduler's durable state: written before every side effect."""

    status: CycleStatus = CycleStatus.IDLE
    kind: CycleKind = CycleKind.SCHEDULED
    cycle_id: str = ""
    cycle_started: float = 0.0
    plan: Plan | None = None
    """The plan of the cycle in progress (None when idle)."""
    request_id: str = ""
    """The manual request this cycle carries out (manual cycles only)."""
    step_index: int = 0
    phase: Phase = Phase.START
    step_started: float = 0.0
    deadline: float = 0.0
    attempt: int = 0
    polls: int = 0
    errors: int = 0
    """Consecutive temporary failures of the current phase's request (backoff)."""
    trigger_id: str = ""
    pending_job_id: str = ""
    in_doubt: bool = False
    """A request of this phase may have reached the backend without a clear answer
    (the scheduler restarted, or the connection broke): treat a refusal as "maybe
    already done" and look before asking again."""
    grace_until: float = 0.0
    """CONFIRMING: when to stop waiting for an in-flight submission to show up."""
    refusal: str = ""
    """The backend's last refusal of a submission made in doubt (reported if it sticks)."""
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
    requests: list[Request] = field(default_factory=list)
    savepoint_failures: int = 0

    def move(self, phase: Phase) -> None:
        check(PHASE_TRANSITIONS, "step phase", self.phase, phase)
        if phase is not self.phase:
            self.polls = 0
        self.phase = phase

    def set_status(self, status: CycleStatus) -> None:
        check(CYCLE_TRANSITIONS, "cycle", self.status, status)
        self.status = status

    def request(self, request_id: str) -> Request | None:
        return next((r for r in self.requests if r.id == request_id), None)

    def last_scheduled(self) -> CycleSummary | None:
        """The newest scheduled cycle (manual ones do not move the schedule)."""
        return next((c for c in reversed(self.cycles) if c.kind is CycleKind.SCHEDULED), None)

    def newest_savepoints(self) -> dict[str, SavepointRecord]:
        """Job -> its newest COMPLETED savepoint."""
        out: dict[str, SavepointRecord] = {}
        for record in self.history:
            if record.status is SavepointStatus.COMPLETED and record.job:
                if record.job not in out or record.taken_at >= out[record.job].taken_at:
                    out[record.job] = record
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(replace(self, plan=None, requests=[]))
        data["plan"] = self.plan.to_dict() if self.plan else None
        data["requests"] = [r.to_dict() for r in self.requests]
        return _enum_values(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CycleState:
        data = dict(data)
        data["status"] = CycleStatus(data["status"])
        data["kind"] = CycleKind(data.get("kind", "SCHEDULED"))
        data["phase"] = Phase(data["phase"])
        data["plan"] = Plan.from_dict(data["plan"]) if data.get("plan") else None
        data["history"] = [
            SavepointRecord(**{**r, "status": SavepointStatus(r["status"])})
            for r in data.get("history", [])
        ]
        data["cycles"] = [CycleSummary(**{**c, "kind": CycleKind(c.get("kind", "SCHEDULED"))})
                          for c in data.get("cycles", [])]
        data["requests"] = [Request.from_dict(r) for r in data.get("requests", [])]
        return cls(**data)


def _enum_values(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _enum_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_enum_values(v) for v in value]
    return value
