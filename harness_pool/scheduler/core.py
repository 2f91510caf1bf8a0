"""The pure decision core: ``decide(cfg, state, event, now) -> Decision``.

No I/O and no clock: the shell passes ``now`` and what it observed, persists the
returned state, and only then performs the returned effect. ``effect_for``
gives the effect of the current phase alone, which is what a restarted
scheduler re-issues after loading its state; every effect is idempotent
(derived trigger and job ids), so re-issuing is always safe.

Failure policy, decided here:
- a failed savepoint is retried (new trigger id) after checking the job still
  runs; after ``savepoints.retries`` the cycle fails and the job stays RUNNING;
- any other failed step (bounded job FAILED, wait timed out, submit refused)
  turns the cycle to RECOVERING: the failed job is cancelled if it timed out,
  then every job this cycle stopped is resumed from this cycle's savepoint;
- a job left stopped is reported in ``failure`` in capitals, never silently.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone

from harness_pool.scheduler.config import Action, CycleConfig, Step
from harness_pool.scheduler.model import (
    Accepted,
    Begin,
    CycleState,
    CycleStatus,
    CycleSummary,
    Decision,
    Disposed,
    Duplicate,
    Effect,
    Event,
    Failed,
    Found,
    JobState,
    Phase,
    SavepointDone,
    SavepointFailed,
    SavepointPending,
    SavepointRecord,
    SavepointStatus,
    Slots,
    Submitted,
    derive_id,
)

IDLE = Effect("idle")
TERMINAL = ("FINISHED", "FAILED", "CANCELED")
TRANSIENT = ("CREATED", "INITIALIZING", "RECONCILING", "RESTARTING")
KEEP_CYCLES = 20


def next_due(cfg: CycleConfig, last_start: float | None, now: float) -> float | None:
    """When the next cycle is due (epoch seconds), or None when only on demand."""
    sched = cfg.schedule
    if sched.every:
        return now if last_start is None else max(now, last_start + sched.every)
    if sched.cron:
        from zoneinfo import ZoneInfo

        from croniter import croniter

        base = datetime.fromtimestamp(now, tz=timezone.utc).astimezone(ZoneInfo(sched.timezone))
        return float(croniter(sched.cron, base).get_next(float))
    return None


def start_cycle(cfg: CycleConfig, state: CycleState, now: float) -> Decision:
    """Begin a cycle now (schedule due or on demand)."""
    new = copy.deepcopy(state)
    new.set_status(CycleStatus.RUNNING)
    new.cycle_id = f"{cfg.name}-{int(now * 1000)}"
    new.cycle_started = now
    new.step_index, new.failure, new.taken, new.downtime = 0, "", {}, {}
    new.stopped_at, new.recovery = {}, []
    _enter_step(cfg, new, now)
    return Decision(new, effect_for(cfg, new, now),
                    f"cycle {new.cycle_id} started; {len(cfg.steps)} steps")


def current_step(cfg: CycleConfig, state: CycleState) -> Step:
    if state.status is CycleStatus.RECOVERING:
        return Step(Action.RESUME, job=state.recovery[0], timeout=cfg.savepoints.timeout)
    return cfg.steps[state.step_index]


def _poll_delay(cfg: CycleConfig, state: CycleState) -> float:
    return min(cfg.polling.max_interval, cfg.polling.interval * (1.5 ** min(state.polls, 30)))


def effect_for(cfg: CycleConfig, state: CycleState, now: float) -> Effect:
    """The effect the current phase needs (re-issued as-is after a restart)."""
    if state.status is CycleStatus.IDLE:
        return IDLE
    if state.status is CycleStatus.FINISHING:
        return Effect("dispose", paths=tuple(_to_dispose(cfg, state)))
    step = current_step(cfg, state)
    job_id = state.jobs.get(step.job, "")
    phase = state.phase
    delay = _poll_delay(cfg, state) if state.polls else 0.0
    if phase is Phase.FINDING:
        return Effect("find", job=step.job, delay=delay)
    if phase is Phase.TRIGGERING:
        kind = "savepoint" if step.action is Action.SAVEPOINT else "stop"
        return Effect(kind, job=step.job, job_id=job_id, trigger_id=state.trigger_id,
                      delay=delay)
    if phase is Phase.POLLING:
        return Effect("poll-savepoint", job=step.job, job_id=job_id,
                      trigger_id=state.trigger_id, delay=delay)
    if phase in (Phase.CHECKING, Phase.STOPPING, Phase.STARTING, Phase.WAITING,
                 Phase.CANCELLING):
        target = state.pending_job_id if phase is Phase.STARTING else job_id
        return Effect("poll-job", job=step.job, job_id=target, delay=delay)
    if phase is Phase.BACKOFF:
        wait = cfg.savepoints.retry_backoff * (2 ** max(0, state.attempt - 1))
        return Effect("sleep", delay=max(0.0, state.step_started + wait - now))
    if phase is Phase.SLOTS:
        return Effect("slots", job=step.job, delay=delay)
    if phase is Phase.SUBMITTING:
        return Effect("submit", job=step.job, job_id=state.pending_job_id,
                      savepoint=_restore_path(cfg, state, step) or "",
                      parallelism=state.parallelism, delay=delay)
    if phase in (Phase.ABORTING,):
        return Effect("cancel", job=step.job, job_id=job_id, delay=delay)
    if phase is Phase.SLEEPING:
        return Effect("sleep", delay=max(0.0, state.step_started + step.duration - now))
    return Effect("sleep")  # START: a no-op; the next decide enters the step


def decide(cfg: CycleConfig, state: CycleState, event: Event, now: float) -> Decision:
    """Apply one observation to the state; return the new state and the next effect."""
    new = copy.deepcopy(state)
    if new.status is CycleStatus.IDLE:
        return Decision(new, IDLE, "no cycle in progress")
    if new.status is CycleStatus.FINISHING:
        return _finish(cfg, new, event, now)
    if isinstance(event, Begin) and new.phase is not Phase.START:
        return Decision(new, effect_for(cfg, new, now),
                        f"re-entering step {new.step_index} phase {new.phase.value}")
    step = current_step(cfg, new)
    if isinstance(event, Failed) and event.temporary and now < new.deadline:
        new.polls += 1
        return Decision(new, effect_for(cfg, new, now),
                        f"{step.job or 'step'}: temporary failure ({event.reason}); retrying")
    if isinstance(event, Failed) and new.phase is not Phase.ABORTING:
        return _fail_step(cfg, new, now, f"{step.action.value} {step.job}: {event.reason}")
    handler = _HANDLERS[new.phase]
    return handler(cfg, new, step, event, now)


# -- step entry ------------------------------------------------------------------


def _enter_step(cfg: CycleConfig, state: CycleState, now: float) -> None:
    """Put the state at the first phase of the current step (no effect is taken yet)."""
    step = current_step(cfg, state)
    state.phase, state.polls, state.attempt = Phase.START, 0, 0
    state.step_started = now
    state.deadline = now + step.timeout
    state.trigger_id = state.pending_job_id = ""
    state.parallelism = None
    action = step.action
    known = state.jobs.get(step.job)
    if action in (Action.SUSPEND, Action.SAVEPOINT, Action.RESCALE):
        state.deadline = now + max(step.timeout, cfg.savepoints.timeout)
        if known:
            _begin_trigger(state, step, now)
        else:
            state.move(Phase.FINDING)
    elif action in (Action.START, Action.RESUME):
        _begin_submit(cfg, state, step)
    elif action in (Action.WAIT, Action.CANCEL):
        state.move(Phase.FINDING if not known else
                   (Phase.WAITING if action is Action.WAIT else Phase.ABORTING))
    elif action is Action.SLEEP:
        state.move(Phase.SLEEPING)


def _begin_trigger(state: CycleState, step: Step, now: float) -> None:
    state.move(Phase.TRIGGERING)
    state.trigger_id = derive_id(state.cycle_id, state.step_index, step.job, "sp", state.attempt)
    if step.action is not Action.SAVEPOINT:
        state.stopped_at.setdefault(step.job, now)


def _begin_submit(cfg: CycleConfig, state: CycleState, step: Step) -> None:
    job = cfg.jobs[step.job]
    par = step.parallelism if step.action is Action.RESCALE else job.parallelism
    if par == "free-slots":
        state.move(Phase.SLOTS)
        return
    state.parallelism = par if isinstance(par, int) else None
    state.pending_job_id = derive_id(state.cycle_id, state.step_index, step.job, "job",
                                     state.status.value)
    state.move(Phase.SUBMITTING)


def _restore_path(cfg: CycleConfig, state: CycleState, step: Step) -> str | None:
    if step.action in (Action.RESUME, Action.RESCALE):
        return state.taken.get(step.job)
    if step.savepoint == "latest":
        done = [r for r in state.history
                if r.job == step.job and r.status is SavepointStatus.COMPLETED]
        return done[-1].path if done else None
    return step.savepoint or None


# -- phase handlers ----------------------------------------------------------------


def _finding(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, Found):
        return _unexpected(cfg, s, ev, now)
    if len(ev.job_ids) != 1:
        what = "no running copy" if not ev.job_ids else f"{len(ev.job_ids)} running copies " \
            f"({', '.join(ev.job_ids)}); refusing to guess"
        return _fail_step(cfg, s, now, f"{step.action.value} {step.job}: {what}")
    s.jobs[step.job] = ev.job_ids[0]
    if step.action is Action.WAIT:
        s.move(Phase.WAITING)
    elif step.action is Action.CANCEL:
        s.move(Phase.ABORTING)
    else:
        _begin_trigger(s, step, now)
    return Decision(s, effect_for(cfg, s, now), f"job {step.job} is {ev.job_ids[0]}")


def _triggering(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, Accepted):
        return _unexpected(cfg, s, ev, now)
    s.move(Phase.POLLING)
    return Decision(s, effect_for(cfg, s, now),
                    f"savepoint of {step.job} requested (trigger {s.trigger_id}); polling")


def _polling(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if isinstance(ev, SavepointPending):
        if now >= s.deadline:
            return _fail_step(cfg, s, now, f"savepoint of {step.job} timed out")
        s.polls += 1
        return Decision(s, effect_for(cfg, s, now))
    if isinstance(ev, SavepointFailed):
        s.savepoint_failures += 1
        s.last_error = ev.reason
        s.stopped_at.pop(step.job, None)
        s.move(Phase.CHECKING)
        return Decision(s, effect_for(cfg, s, now),
                        f"savepoint of {step.job} failed: {ev.reason}; checking the job runs")
    if not isinstance(ev, SavepointDone):
        return _unexpected(cfg, s, ev, now)
    s.history.append(SavepointRecord(step.job, ev.location, now, s.cycle_id))
    if step.action is Action.SAVEPOINT:
        return _step_done(cfg, s, now, f"savepoint of {step.job} at {ev.location}")
    s.taken[step.job] = ev.location
    s.move(Phase.STOPPING)
    return Decision(s, effect_for(cfg, s, now),
                    f"savepoint of {step.job} at {ev.location}; waiting for it to stop")


def _checking(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, JobState):
        return _unexpected(cfg, s, ev, now)
    if ev.state in TRANSIENT and now < s.deadline:
        return _poll_again(cfg, s, now, f"{step.job} is {ev.state} after the failed savepoint")
    if ev.state != "RUNNING":
        return _fail_step(cfg, s, now, f"savepoint of {step.job} ({s.jobs.get(step.job)}) "
                          f"failed ({s.last_error}) and the job is {ev.state or 'GONE'}: "
                          f"JOB {step.job.upper()} IS NOT RUNNING; resume it by hand")
    if s.attempt >= cfg.savepoints.retries:
        return _fail_step(cfg, s, now, f"savepoint of {step.job} failed {s.attempt + 1} times "
                          f"(last: {s.last_error}); job left RUNNING")
    s.attempt += 1
    s.step_started = now
    s.move(Phase.BACKOFF)
    return Decision(s, effect_for(cfg, s, now),
                    f"{step.job} still RUNNING; savepoint attempt {s.attempt + 1} after backoff")


def _backoff(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    _begin_trigger(s, step, now)
    return Decision(s, effect_for(cfg, s, now), f"retrying savepoint of {step.job}")


def _stopping(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, JobState):
        return _unexpected(cfg, s, ev, now)
    if ev.state in TERMINAL or ev.state is None:
        s.jobs.pop(step.job, None)
        if step.action is Action.RESCALE:
            _begin_submit(cfg, s, step)
            return Decision(s, effect_for(cfg, s, now), f"{step.job} stopped; rescaling")
        return _step_done(cfg, s, now, f"{step.job} stopped ({ev.state}) with savepoint "
                          f"{s.taken[step.job]}")
    return _poll_again(cfg, s, now, f"{step.job} still {ev.state} after its savepoint")


def _slots(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, Slots):
        return _unexpected(cfg, s, ev, now)
    if ev.free < 1:
        return _fail_step(cfg, s, now, f"rescale {step.job}: no free slots")
    s.parallelism = ev.free
    s.pending_job_id = derive_id(s.cycle_id, s.step_index, step.job, "job", s.status.value)
    s.move(Phase.SUBMITTING)
    return Decision(s, effect_for(cfg, s, now), f"rescaling {step.job} to {ev.free} slots")


def _submitting(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if isinstance(ev, Duplicate):
        return _fail_step(cfg, s, now, f"{step.action.value} {step.job}: already running as "
                          f"{', '.join(ev.job_ids)}; refusing to start a second copy")
    if not isinstance(ev, Submitted):
        return _unexpected(cfg, s, ev, now)
    s.pending_job_id = ev.job_id
    s.move(Phase.STARTING)
    return Decision(s, effect_for(cfg, s, now), f"{step.job} submitted as {ev.job_id}")


def _starting(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, JobState):
        return _unexpected(cfg, s, ev, now)
    if ev.state == "RUNNING" or (ev.state == "FINISHED" and step.action is Action.START):
        s.jobs[step.job] = s.pending_job_id
        if step.job in s.stopped_at:
            s.downtime[step.job] = now - s.stopped_at.pop(step.job)
        if s.status is CycleStatus.RECOVERING:
            s.recovery.pop(0)
        return _step_done(cfg, s, now, f"{step.job} is {ev.state} as {s.pending_job_id}")
    if ev.state in ("FAILED", "CANCELED"):
        return _fail_step(cfg, s, now, f"{step.job} is {ev.state} right after submission")
    if now >= s.deadline:
        return _fail_step(cfg, s, now, f"{step.job} not RUNNING after {step.timeout:.0f} s")
    return _poll_again(cfg, s, now)


def _waiting(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, JobState):
        return _unexpected(cfg, s, ev, now)
    if ev.state == step.state:
        if ev.state in TERMINAL:
            s.jobs.pop(step.job, None)
        return _step_done(cfg, s, now, f"{step.job} reached {ev.state}")
    if ev.state in TERMINAL or ev.state is None:
        s.jobs.pop(step.job, None)
        return _fail_step(cfg, s, now, f"wait {step.job}: job is {ev.state or 'GONE'}, "
                          f"expected {step.state}")
    if now >= s.deadline:
        s.failure = f"wait {step.job}: still {ev.state} after {step.timeout:.0f} s"
        s.move(Phase.ABORTING)
        return Decision(s, effect_for(cfg, s, now), s.failure + "; cancelling it")
    return _poll_again(cfg, s, now)


def _aborting(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if step.action is Action.CANCEL and not s.failure:
        if isinstance(ev, Failed):
            return _fail_step(cfg, s, now, f"cancel {step.job}: {ev.reason}")
        s.move(Phase.CANCELLING)
        return Decision(s, effect_for(cfg, s, now), f"cancel of {step.job} requested")
    s.jobs.pop(step.job, None)
    return _fail_step(cfg, s, now, s.failure or f"{step.job} cancelled")


def _cancelling(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if isinstance(ev, JobState) and (ev.state in TERMINAL or ev.state is None):
        s.jobs.pop(step.job, None)
        return _step_done(cfg, s, now, f"{step.job} is {ev.state or 'GONE'}")
    if now >= s.deadline:
        return _fail_step(cfg, s, now, f"cancel {step.job}: not cancelled in time")
    return _poll_again(cfg, s, now)


def _sleeping(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if now < s.step_started + step.duration:
        return Decision(s, effect_for(cfg, s, now))
    return _step_done(cfg, s, now, f"slept {step.duration:.1f} s")


def _start(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    _enter_step(cfg, s, now)
    return Decision(s, effect_for(cfg, s, now))


_HANDLERS = {
    Phase.START: _start, Phase.FINDING: _finding, Phase.TRIGGERING: _triggering,
    Phase.POLLING: _polling, Phase.CHECKING: _checking, Phase.BACKOFF: _backoff,
    Phase.STOPPING: _stopping, Phase.SLOTS: _slots, Phase.SUBMITTING: _submitting,
    Phase.STARTING: _starting, Phase.WAITING: _waiting, Phase.CANCELLING: _cancelling,
    Phase.ABORTING: _aborting, Phase.SLEEPING: _sleeping,
}


# -- transitions between steps -----------------------------------------------------


def _poll_again(cfg: CycleConfig, s: CycleState, now: float, note: str = "") -> Decision:
    s.polls += 1
    return Decision(s, effect_for(cfg, s, now), note)


def _unexpected(cfg: CycleConfig, s: CycleState, ev: Event, now: float) -> Decision:
    return _fail_step(cfg, s, now, f"unexpected {type(ev).__name__} in phase {s.phase.value}")


def _step_done(cfg: CycleConfig, s: CycleState, now: float, note: str) -> Decision:
    s.move(Phase.START)
    if s.status is CycleStatus.RUNNING:
        s.step_index += 1
        more = s.step_index < len(cfg.steps)
    else:
        more = bool(s.recovery)
    if more:
        _enter_step(cfg, s, now)
        return Decision(s, effect_for(cfg, s, now), f"{note}; next: step {s.step_index}")
    s.set_status(CycleStatus.FINISHING)
    return Decision(s, effect_for(cfg, s, now), f"{note}; all steps done, applying retention")


def _fail_step(cfg: CycleConfig, s: CycleState, now: float, reason: str) -> Decision:
    s.phase = Phase.START  # leaving the step from any phase is legal
    s.failure = s.failure if s.status is CycleStatus.RECOVERING else reason
    stopped = [job for job in s.taken if job not in s.jobs]
    if s.status is CycleStatus.RECOVERING:
        down = ", ".join(f"{j} (savepoint {s.taken[j]})" for j in s.recovery)
        s.failure = f"{s.failure}; RESUME FAILED ({reason}); JOBS LEFT STOPPED: {down}"
        s.recovery = []
        s.set_status(CycleStatus.FINISHING)
        return Decision(s, effect_for(cfg, s, now), s.failure)
    unknown = [job for job in s.stopped_at if job not in s.taken]
    if unknown:
        s.failure += (f"; CHECK {', '.join(unknown).upper()}: A STOP WAS REQUESTED AND NO "
                      "SAVEPOINT IS KNOWN (see savepoints list / the cluster)")
    s.set_status(CycleStatus.RECOVERING)
    s.recovery = stopped
    if not stopped:
        s.set_status(CycleStatus.FINISHING)
        return Decision(s, effect_for(cfg, s, now), f"step failed: {s.failure}; nothing to resume")
    _enter_step(cfg, s, now)
    return Decision(s, effect_for(cfg, s, now),
                    f"step failed: {s.failure}; resuming {', '.join(stopped)} from this cycle's "
                    "savepoints")


def _to_dispose(cfg: CycleConfig, s: CycleState) -> list[str]:
    """Completed savepoints beyond the newest ``keep`` of each job (never one in use)."""
    out: list[str] = []
    in_use = set(s.taken.values())
    by_job: dict[str, list[SavepointRecord]] = {}
    for record in s.history:
        if record.status is SavepointStatus.COMPLETED:
            by_job.setdefault(record.job, []).append(record)
    for records in by_job.values():
        for record in records[: max(0, len(records) - cfg.savepoints.keep)]:
            if record.path not in in_use:
                out.append(record.path)
    return out


def _finish(cfg: CycleConfig, s: CycleState, ev: Event, now: float) -> Decision:
    if isinstance(ev, Begin):
        return Decision(s, effect_for(cfg, s, now), "applying savepoint retention")
    disposed = set(ev.paths) if isinstance(ev, Disposed) else set()
    for record in s.history:
        if record.path in disposed and record.status is SavepointStatus.COMPLETED:
            record.status = SavepointStatus.DISPOSED
    s.history = [r for r in s.history if r.status is SavepointStatus.COMPLETED][-100:]
    ok = not s.failure
    s.cycles.append(CycleSummary(s.cycle_id, s.cycle_started, now, ok, s.failure,
                                 dict(s.downtime)))
    s.cycles = s.cycles[-KEEP_CYCLES:]
    s.set_status(CycleStatus.IDLE)
    s.phase, s.step_index = Phase.START, 0
    verdict = "completed" if ok else f"FAILED: {s.failure}"
    return Decision(s, IDLE, f"cycle {s.cycle_id} {verdict}; disposed {len(disposed)} "
                    "old savepoints")
