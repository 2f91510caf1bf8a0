"""The pure decision core: ``decide(cfg, state, event, now) -> Decision``.

No I/O and no clock: the shell passes ``now`` and what it observed, persists the
returned state, and only then performs the returned effect. After a restart
the shell feeds ``Begin``: the core decides how to re-enter the phase it was
in (a request that may have been sent is looked for before it is sent again).
Every effect is idempotent (derived trigger and job ids), so re-issuing is safe.

Failure policy, decided here (phase handlers in ``phases``, retention in
``retention``):
- a failed savepoint is retried (new trigger id) after checking the job still
  runs; after ``savepoints.retries`` the cycle fails and the job stays RUNNING;
- any other failed step (bounded job FAILED, wait timed out, submit refused,
  a resume that restored from another savepoint) turns the cycle to
  RECOVERING: the failed job is cancelled if it timed out, then every job this
  cycle stopped is resumed from this cycle's savepoint;
- a job left stopped is reported in ``failure`` in capitals, never silently.

Manual requests (``harness-pool savepoints trigger|resume|dispose``) are
queued into the same state and run as one-step MANUAL cycles, only when no
cycle is in progress: one actor, one state, whatever the entry point.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone

from harness_pool.scheduler import phases, retention
from harness_pool.scheduler.config import Action, CycleConfig, Step
from harness_pool.scheduler.events import (
    IDLE,
    Begin,
    Decision,
    Event,
    Failed,
)
from harness_pool.scheduler.model import (
    KEEP_REQUESTS,
    CycleKind,
    CycleState,
    CycleStatus,
    Phase,
    Plan,
    Request,
    RequestKind,
    RequestStatus,
    SavepointRecord,
    SavepointStatus,
)
from harness_pool.scheduler.steps import current_step, effect_for, enter_step, plan_of

__all__ = ["accept_requests", "current_step", "decide", "effect_for", "next_due",
           "next_request", "plan_of", "start_cycle", "start_request"]


def next_due(cfg: CycleConfig, last_start: float | None, now: float) -> float | None:
    """When the next scheduled cycle is due (epoch seconds), or None when only on demand."""
    sched = cfg.schedule
    if sched.every:
        return now if last_start is None else max(now, last_start + sched.every)
    if sched.cron:
        from zoneinfo import ZoneInfo

        from croniter import croniter

        base = datetime.fromtimestamp(now, tz=timezone.utc).astimezone(ZoneInfo(sched.timezone))
        return float(croniter(sched.cron, base).get_next(float))
    return None


def _begin(cfg: CycleConfig, state: CycleState, now: float, plan: Plan, kind: CycleKind,
           cycle_id: str) -> CycleState:
    new = copy.deepcopy(state)
    new.set_status(CycleStatus.RUNNING)
    new.kind, new.plan, new.cycle_id, new.cycle_started = kind, plan, cycle_id, now
    new.step_index, new.failure, new.taken, new.downtime = 0, "", {}, {}
    new.stopped_at, new.recovery, new.request_id = {}, [], ""
    return new


def start_cycle(cfg: CycleConfig, state: CycleState, now: float) -> Decision:
    """Begin a scheduled cycle now, under the plan the cycle file gives today."""
    new = _begin(cfg, state, now, Plan.of(cfg), CycleKind.SCHEDULED,
                 f"{cfg.name}-{int(now * 1000)}")
    enter_step(cfg, new, now)
    return Decision(new, effect_for(cfg, new, now),
                    f"cycle {new.cycle_id} started; {len(new.plan.steps)} steps")  # type: ignore


# -- manual requests ------------------------------------------------------------------


def accept_requests(cfg: CycleConfig, state: CycleState, incoming: list[Request],
                    now: float) -> tuple[CycleState, list[str]]:
    """Queue new requests into the state (ids seen before are ignored); refuse bad ones."""
    new = copy.deepcopy(state)
    notes: list[str] = []
    known = {r.id for r in new.requests}
    for req in incoming:
        if req.id in known:
            continue
        req = copy.deepcopy(req)
        req.status, req.submitted_at = RequestStatus.QUEUED, req.submitted_at or now
        problem = _refusal(cfg, new, req)
        if problem:
            req.move(RequestStatus.FAILED, problem)
            req.finished_at = now
            notes.append(f"request {req.id} ({req.kind.value} {req.job or req.path}) "
                         f"refused: {problem}")
        else:
            notes.append(f"request {req.id} ({req.kind.value} {req.job or req.path}) queued")
        new.requests.append(req)
        known.add(req.id)
    done = [r for r in new.requests if r.status in (RequestStatus.DONE, RequestStatus.FAILED)]
    drop = {r.id for r in done[:max(0, len(done) - KEEP_REQUESTS)]}
    new.requests = [r for r in new.requests if r.id not in drop]
    return new, notes


def _refusal(cfg: CycleConfig, state: CycleState, req: Request) -> str:
    if req.kind in (RequestKind.SAVEPOINT, RequestKind.RESUME) and req.job not in cfg.jobs:
        return f"unknown job {req.job!r}; known: {', '.join(sorted(cfg.jobs))}"
    if req.kind is RequestKind.RESUME and not req.path \
            and req.job not in state.newest_savepoints():
        return f"no savepoint of {req.job} in the history; give --path"
    if req.kind is RequestKind.DISPOSE and not req.path:
        return "no savepoint path given"
    return ""


def next_request(state: CycleState) -> Request | None:
    return next((r for r in state.requests if r.status is RequestStatus.QUEUED), None)


def start_request(cfg: CycleConfig, state: CycleState, request_id: str,
                  now: float) -> Decision:
    """Run a queued request as a MANUAL cycle (only when no cycle is in progress)."""
    req = state.request(request_id)
    if req is None or req.status is not RequestStatus.QUEUED:
        raise ValueError(f"request {request_id} is not queued")
    timeout = cfg.savepoints.timeout
    steps: tuple[Step, ...]
    if req.kind is RequestKind.SAVEPOINT:
        steps = (Step(Action.SAVEPOINT, job=req.job, timeout=timeout),)
    elif req.kind is RequestKind.RESUME:
        steps = (Step(Action.START, job=req.job, timeout=timeout,
                      savepoint=req.path or "latest"),)
    else:
        steps = ()
    new = _begin(cfg, state, now, Plan.of(cfg, steps), CycleKind.MANUAL,
                 f"{cfg.name}-{req.kind.value}-{int(now * 1000)}")
    new.request_id = req.id
    mine = new.request(req.id)
    assert mine is not None
    mine.move(RequestStatus.RUNNING)
    note = f"request {req.id}: {req.kind.value} {req.job or req.path} runs as {new.cycle_id}"
    if req.kind is RequestKind.DISPOSE:
        _mark_for_disposal(new, req.path, now)
        return retention.enter_finishing(cfg, new, now, note)
    enter_step(cfg, new, now)
    return Decision(new, effect_for(cfg, new, now), note)


def _mark_for_disposal(state: CycleState, path: str, now: float) -> None:
    records = [r for r in state.history if r.path == path]
    if not records:
        state.history.append(SavepointRecord("", path, now, state.cycle_id,
                                             SavepointStatus.DISPOSING))
    for record in records:
        if record.status is SavepointStatus.COMPLETED:
            record.move(SavepointStatus.DISPOSING)


# -- the decision ------------------------------------------------------------------


def decide(cfg: CycleConfig, state: CycleState, event: Event, now: float) -> Decision:
    """Apply one observation to the state; return the new state and the next effect."""
    new = copy.deepcopy(state)
    if new.status is CycleStatus.IDLE:
        return Decision(new, IDLE, "no cycle in progress")
    if new.status is CycleStatus.FINISHING:
        return retention.finish(cfg, new, event, now)
    if isinstance(event, Begin) and new.phase is not Phase.START:
        return phases.reenter(cfg, new, now)
    step = current_step(cfg, new)
    if isinstance(event, Failed) and not (new.phase is Phase.ABORTING
                                          and step.action is Action.CANCEL):
        return phases.failed(cfg, new, step, event, now)
    if not isinstance(event, Failed):
        new.errors = 0
    return phases.HANDLERS[new.phase](cfg, new, step, event, now)
