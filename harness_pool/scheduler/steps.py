"""Steps of a cycle: the plan, the effect each phase needs, entering and leaving steps.

Pure, like the rest of the core: no I/O, no clock. ``effect_for`` gives the
effect a phase needs (what the shell performs after persisting, and re-issues
as-is after a restart); ``enter_step``, ``step_done`` and ``fail_step`` move a
cycle between steps and apply the failure policy described in ``core``.
"""

from __future__ import annotations

from harness_pool.scheduler import retention
from harness_pool.scheduler.config import Action, CycleConfig, Step
from harness_pool.scheduler.events import IDLE, Decision, Effect, EffectKind, Event
from harness_pool.scheduler.model import (
    CycleState,
    CycleStatus,
    Phase,
    Plan,
    derive_id,
    unreachable,
)


def plan_of(cfg: CycleConfig, state: CycleState) -> Plan:
    """The plan the cycle in progress runs under (a state from before plans: today's file)."""
    return state.plan or Plan.of(cfg)


def current_step(cfg: CycleConfig, state: CycleState) -> Step:
    plan = plan_of(cfg, state)
    if state.status is CycleStatus.RECOVERING:
        return Step(Action.RESUME, job=state.recovery[0], timeout=plan.savepoints.timeout)
    return plan.steps[state.step_index]


def _poll_delay(cfg: CycleConfig, state: CycleState) -> float:
    delay = cfg.polling.interval * (1.5 ** min(state.polls, 30)) if state.polls else 0.0
    if state.errors:
        delay = max(delay, min(cfg.polling.error_backoff, 0.5 * 2 ** min(state.errors, 10)))
    return min(max(delay, 0.0), max(cfg.polling.max_interval, cfg.polling.error_backoff)
               if state.errors else cfg.polling.max_interval)


def restore_path(cfg: CycleConfig, state: CycleState, step: Step) -> str | None:
    """The savepoint a start/resume/rescale step restores from (None: start empty)."""
    if step.action in (Action.RESUME, Action.RESCALE):
        return state.taken.get(step.job)
    if step.savepoint == "latest":
        newest = state.newest_savepoints().get(step.job)
        return newest.path if newest else None
    return step.savepoint or None


def effect_for(cfg: CycleConfig, state: CycleState, now: float) -> Effect:
    """The effect the current phase needs (re-issued as-is after a restart)."""
    if state.status is CycleStatus.IDLE:
        return IDLE
    if state.status is CycleStatus.FINISHING:
        return retention.dispose_effect(state)
    step = current_step(cfg, state)
    job, job_id, delay = step.job, state.jobs.get(step.job, ""), _poll_delay(cfg, state)
    phase = state.phase
    if phase is Phase.FINDING:
        return Effect(EffectKind.FIND, job=job, delay=delay)
    if phase is Phase.TRIGGERING:
        kind = EffectKind.SAVEPOINT if step.action is Action.SAVEPOINT else EffectKind.STOP
        return Effect(kind, job=job, job_id=job_id, trigger_id=state.trigger_id, delay=delay)
    if phase is Phase.POLLING:
        return Effect(EffectKind.POLL_SAVEPOINT, job=job, job_id=job_id,
                      trigger_id=state.trigger_id, stop=step.action is not Action.SAVEPOINT,
                      delay=delay)
    if phase is Phase.REVERTING:
        return Effect(EffectKind.REVERT_STOP, job=job, job_id=job_id,
                      trigger_id=state.trigger_id, delay=delay)
    if phase in (Phase.CHECKING, Phase.STOPPING, Phase.WAITING, Phase.CANCELLING):
        return Effect(EffectKind.POLL_JOB, job=job, job_id=job_id, delay=delay)
    if phase in (Phase.STARTING, Phase.CONFIRMING):
        return Effect(EffectKind.POLL_JOB, job=job, job_id=state.pending_job_id, delay=delay)
    if phase is Phase.BACKOFF:
        wait = plan_of(cfg, state).savepoints.retry_backoff * (2 ** max(0, state.attempt - 1))
        return Effect(EffectKind.SLEEP, delay=max(0.0, state.step_started + wait - now))
    if phase is Phase.SLOTS:
        return Effect(EffectKind.SLOTS, job=job, delay=delay)
    if phase is Phase.PROBING:
        return Effect(EffectKind.PROBE, job=job, job_id=state.pending_job_id, delay=delay)
    if phase is Phase.SUBMITTING:
        return Effect(EffectKind.SUBMIT, job=job, job_id=state.pending_job_id,
                      savepoint=restore_path(cfg, state, step) or "",
                      parallelism=state.parallelism, delay=delay)
    if phase is Phase.VERIFYING:
        return Effect(EffectKind.VERIFY, job=job, job_id=job_id,
                      savepoint=restore_path(cfg, state, step) or "", delay=delay)
    if phase is Phase.ABORTING:
        return Effect(EffectKind.CANCEL, job=job, job_id=job_id, delay=delay)
    if phase is Phase.SLEEPING:
        return Effect(EffectKind.SLEEP, delay=max(0.0, state.step_started + step.duration - now))
    if phase is Phase.START:
        return Effect(EffectKind.SLEEP)  # a no-op; the next decide enters the step
    unreachable(phase)


def enter_step(cfg: CycleConfig, state: CycleState, now: float) -> None:
    """Put the state at the first phase of the current step (no effect is taken yet)."""
    step = current_step(cfg, state)
    state.phase, state.polls, state.attempt, state.errors = Phase.START, 0, 0, 0
    state.step_started = now
    state.deadline = now + step.timeout
    state.trigger_id = state.pending_job_id = state.refusal = ""
    state.in_doubt, state.grace_until = False, 0.0
    state.parallelism = None
    action = step.action
    known = state.jobs.get(step.job)
    if action in (Action.SUSPEND, Action.SAVEPOINT, Action.RESCALE):
        state.deadline = now + max(step.timeout, plan_of(cfg, state).savepoints.timeout)
        if known:
            begin_trigger(state, step, now)
        else:
            state.move(Phase.FINDING)
    elif action in (Action.START, Action.RESUME):
        begin_submit(cfg, state, step)
    elif action in (Action.WAIT, Action.CANCEL):
        state.move(Phase.FINDING if not known else
                   (Phase.WAITING if action is Action.WAIT else Phase.ABORTING))
    elif action is Action.SLEEP:
        state.move(Phase.SLEEPING)
    else:
        unreachable(action)


def begin_trigger(state: CycleState, step: Step, now: float) -> None:
    state.move(Phase.TRIGGERING)
    state.in_doubt = False
    state.trigger_id = derive_id(state.cycle_id, state.step_index, step.job, "sp", state.attempt)
    if step.action is not Action.SAVEPOINT:
        state.stopped_at.setdefault(step.job, now)


def begin_submit(cfg: CycleConfig, state: CycleState, step: Step) -> None:
    job = plan_of(cfg, state).jobs[step.job]
    par = step.parallelism if step.action is Action.RESCALE else job.parallelism
    if par == "free-slots":
        state.move(Phase.SLOTS)
        return
    state.parallelism = par if isinstance(par, int) else None
    begin_probe(state, step)


def begin_probe(state: CycleState, step: Step) -> None:
    state.pending_job_id = derive_id(state.cycle_id, state.step_index, step.job, "job",
                                     state.status.value)
    state.move(Phase.PROBING)


def poll_again(cfg: CycleConfig, s: CycleState, now: float, note: str = "") -> Decision:
    s.polls += 1
    return Decision(s, effect_for(cfg, s, now), note)


def unexpected(cfg: CycleConfig, s: CycleState, ev: Event, now: float) -> Decision:
    return fail_step(cfg, s, now, f"unexpected {type(ev).__name__} in phase {s.phase.value}")


def step_done(cfg: CycleConfig, s: CycleState, now: float, note: str) -> Decision:
    s.move(Phase.START)
    if s.status is CycleStatus.RUNNING:
        s.step_index += 1
        more = s.step_index < len(plan_of(cfg, s).steps)
    else:
        more = bool(s.recovery)
    if more:
        enter_step(cfg, s, now)
        return Decision(s, effect_for(cfg, s, now), f"{note}; next: step {s.step_index}")
    return retention.enter_finishing(cfg, s, now, f"{note}; all steps done, applying retention")


def fail_step(cfg: CycleConfig, s: CycleState, now: float, reason: str) -> Decision:
    s.phase = Phase.START  # leaving the step from any phase is legal
    s.in_doubt, s.errors = False, 0
    s.failure = s.failure if s.status is CycleStatus.RECOVERING else reason
    stopped = [job for job in s.taken if job not in s.jobs]
    if s.status is CycleStatus.RECOVERING:
        down = ", ".join(f"{j} (savepoint {s.taken[j]})" for j in s.recovery)
        s.failure = f"{s.failure}; RESUME FAILED ({reason}); JOBS LEFT STOPPED: {down}"
        s.recovery = []
        return retention.enter_finishing(cfg, s, now, s.failure)
    unknown = [job for job in s.stopped_at if job not in s.taken]
    if unknown:
        s.failure += (f"; CHECK {', '.join(unknown).upper()}: A STOP WAS REQUESTED AND NO "
                      "SAVEPOINT IS KNOWN (see savepoints list / the cluster)")
    if not stopped:
        return retention.enter_finishing(cfg, s, now,
                                         f"step failed: {s.failure}; nothing to resume")
    s.set_status(CycleStatus.RECOVERING)
    s.recovery = stopped
    enter_step(cfg, s, now)
    return Decision(s, effect_for(cfg, s, now),
                    f"step failed: {s.failure}; resuming {', '.join(stopped)} from this cycle's "
                    "savepoints")
