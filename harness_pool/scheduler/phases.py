"""Phase handlers of the decision core: one function per ``Phase``, all pure.

Each handler takes ``(cfg, state, step, event, now)`` with ``state`` already a
private copy, changes it and returns the ``Decision``.

In-flight rule: a request is *in doubt* when it may have reached the backend
without a clear answer (the scheduler restarted while in that phase, or the
connection broke mid-request). A trigger in doubt is re-issued with the same
trigger id, and a refusal sends the core to poll the trigger; a submission in
doubt is never sent again before its derived job id has had
``backend.submit_grace`` to appear, and a refusal of a submission in doubt is
read as "maybe already submitted" (look again), never as a failed step.
"""

from __future__ import annotations

from harness_pool.scheduler.config import Action, CycleConfig, Step
from harness_pool.scheduler.events import (
    Accepted,
    AlreadySubmitted,
    Decision,
    Event,
    Failed,
    Found,
    JobState,
    Probed,
    Restored,
    SavepointDone,
    SavepointFailed,
    SavepointPending,
    Slots,
    Submitted,
)
from harness_pool.scheduler.model import CycleState, CycleStatus, JobStatus, Phase, SavepointRecord
from harness_pool.scheduler.steps import (
    begin_probe,
    begin_submit,
    begin_trigger,
    current_step,
    effect_for,
    enter_step,
    fail_step,
    plan_of,
    poll_again,
    restore_path,
    step_done,
    unexpected,
)

# -- after a restart and after failures ------------------------------------------


def reenter(cfg: CycleConfig, s: CycleState, now: float) -> Decision:
    """The scheduler (re)started in the middle of a phase."""
    step = current_step(cfg, s)
    where = f"step {s.step_index} ({step.action.value} {step.job}) phase {s.phase.value}"
    if s.phase is Phase.TRIGGERING:
        s.in_doubt = True
        return Decision(s, effect_for(cfg, s, now), f"re-entering {where}: re-issuing trigger "
                        f"{s.trigger_id} (Flink/the backend recognises it if it arrived)")
    if s.phase is Phase.SUBMITTING:
        s.in_doubt = True
        return _confirm(cfg, s, step, now, "the submission may have been sent before the "
                        "restart")
    return Decision(s, effect_for(cfg, s, now), f"re-entering {where}")


def _confirm(cfg: CycleConfig, s: CycleState, step: Step, now: float, why: str) -> Decision:
    grace = cfg.backend.submit_grace
    s.grace_until = now + grace
    s.move(Phase.CONFIRMING)
    return Decision(s, effect_for(cfg, s, now), f"{why}: waiting up to {grace:.0f} s for "
                    f"{step.job} ({s.pending_job_id}) to appear before submitting again")


def failed(cfg: CycleConfig, s: CycleState, step: Step, ev: Failed, now: float) -> Decision:
    """A backend call failed (``ev.temporary``: it may work if asked again)."""
    if s.phase is Phase.SUBMITTING and (ev.temporary or s.in_doubt):
        s.in_doubt, s.refusal = True, "" if ev.temporary else ev.reason
        if now >= s.deadline:
            return fail_step(cfg, s, now, f"{step.action.value} {step.job}: {ev.reason}")
        return _confirm(cfg, s, step, now, f"submission of {step.job} had no clear answer "
                        f"({ev.reason})")
    if s.phase is Phase.TRIGGERING and not ev.temporary and s.in_doubt:
        s.move(Phase.POLLING)
        return Decision(s, effect_for(cfg, s, now), f"trigger {s.trigger_id} of {step.job} "
                        f"refused on re-issue ({ev.reason}); polling it, it may have arrived")
    if not ev.temporary or now >= s.deadline:
        return fail_step(cfg, s, now, f"{step.action.value} {step.job}: {ev.reason}")
    if s.phase is Phase.TRIGGERING:
        s.in_doubt = True
    s.errors += 1
    return Decision(s, effect_for(cfg, s, now),
                    f"{step.action.value} {step.job}: {ev.reason}; asking again "
                    f"(attempt {s.errors + 1}, until the step's deadline)")


# -- phase handlers ----------------------------------------------------------------


def _finding(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, Found):
        return unexpected(cfg, s, ev, now)
    if len(ev.job_ids) != 1:
        what = "no running copy" if not ev.job_ids else f"{len(ev.job_ids)} running copies " \
            f"({', '.join(ev.job_ids)}); refusing to guess"
        return fail_step(cfg, s, now, f"{step.action.value} {step.job}: {what}")
    s.jobs[step.job] = ev.job_ids[0]
    if step.action is Action.WAIT:
        s.move(Phase.WAITING)
    elif step.action is Action.CANCEL:
        s.move(Phase.ABORTING)
    else:
        begin_trigger(s, step, now)
    return Decision(s, effect_for(cfg, s, now), f"job {step.job} is {ev.job_ids[0]}")


def _triggering(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, Accepted):
        return unexpected(cfg, s, ev, now)
    s.in_doubt = False
    s.move(Phase.POLLING)
    return Decision(s, effect_for(cfg, s, now),
                    f"savepoint of {step.job} requested (trigger {s.trigger_id}); polling")


def _polling(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if isinstance(ev, SavepointPending):
        if now >= s.deadline:
            return fail_step(cfg, s, now, f"savepoint of {step.job} timed out")
        return poll_again(cfg, s, now)
    if isinstance(ev, SavepointFailed):
        s.savepoint_failures += 1
        s.last_error = ev.reason
        s.stopped_at.pop(step.job, None)
        if step.action is Action.SAVEPOINT:
            s.move(Phase.CHECKING)
            return Decision(s, effect_for(cfg, s, now), f"savepoint of {step.job} failed: "
                            f"{ev.reason}; checking the job runs")
        s.move(Phase.REVERTING)
        return Decision(s, effect_for(cfg, s, now), f"savepoint of {step.job} failed: "
                        f"{ev.reason}; asking the backend to keep {step.job} running")
    if not isinstance(ev, SavepointDone):
        return unexpected(cfg, s, ev, now)
    s.history.append(SavepointRecord(step.job, ev.location, now, s.cycle_id, ref=ev.ref))
    if step.action is Action.SAVEPOINT:
        return step_done(cfg, s, now, f"savepoint of {step.job} at {ev.location}")
    s.taken[step.job] = ev.location
    s.move(Phase.STOPPING)
    return Decision(s, effect_for(cfg, s, now),
                    f"savepoint of {step.job} at {ev.location}; waiting for it to stop")


def _reverting(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, Accepted):
        return unexpected(cfg, s, ev, now)
    s.move(Phase.CHECKING)
    return Decision(s, effect_for(cfg, s, now), f"{step.job} asked to keep running; checking")


def _checking(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, JobState):
        return unexpected(cfg, s, ev, now)
    state = ev.state
    if state is not None and state.settling and now < s.deadline:
        return poll_again(cfg, s, now, f"{step.job} is {state.value} after the failed "
                           "savepoint")
    if state is not JobStatus.RUNNING:
        return fail_step(cfg, s, now, f"savepoint of {step.job} ({s.jobs.get(step.job)}) "
                         f"failed ({s.last_error}) and the job is "
                         f"{state.value if state else 'GONE'}: JOB {step.job.upper()} IS NOT "
                         "RUNNING; resume it by hand")
    if s.attempt >= plan_of(cfg, s).savepoints.retries:
        return fail_step(cfg, s, now, f"savepoint of {step.job} failed {s.attempt + 1} times "
                         f"(last: {s.last_error}); job left RUNNING")
    s.attempt += 1
    s.step_started = now
    s.move(Phase.BACKOFF)
    return Decision(s, effect_for(cfg, s, now),
                    f"{step.job} still RUNNING; savepoint attempt {s.attempt + 1} after backoff")


def _backoff(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    begin_trigger(s, step, now)
    return Decision(s, effect_for(cfg, s, now), f"retrying savepoint of {step.job}")


def _stopping(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, JobState):
        return unexpected(cfg, s, ev, now)
    if ev.state is None or ev.state.terminal:
        s.jobs.pop(step.job, None)
        if step.action is Action.RESCALE:
            begin_submit(cfg, s, step)
            return Decision(s, effect_for(cfg, s, now), f"{step.job} stopped; rescaling")
        return step_done(cfg, s, now, f"{step.job} stopped "
                         f"({ev.state.value if ev.state else 'GONE'}) with savepoint "
                         f"{s.taken[step.job]}")
    if now >= s.deadline:
        return fail_step(cfg, s, now, f"{step.job} still {ev.state.value} after its savepoint "
                         f"({s.taken[step.job]})")
    return poll_again(cfg, s, now)


def _slots(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, Slots):
        return unexpected(cfg, s, ev, now)
    if ev.free < 1:
        return fail_step(cfg, s, now, f"rescale {step.job}: no free slots")
    s.parallelism = ev.free
    begin_probe(s, step)
    return Decision(s, effect_for(cfg, s, now), f"rescaling {step.job} to {ev.free} slots")


def _probing(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, Probed):
        return unexpected(cfg, s, ev, now)
    if ev.state is not None:
        s.move(Phase.STARTING)
        return Decision(s, effect_for(cfg, s, now), f"{step.job} already submitted as "
                        f"{s.pending_job_id} ({ev.state.value}); not submitting again")
    if ev.others and s.status is CycleStatus.RECOVERING:
        s.jobs[step.job] = ev.others[0]
        return _started(cfg, s, step, now, f"{step.job} is running as {ev.others[0]}; "
                        "nothing to resume")
    if ev.others:
        return fail_step(cfg, s, now, f"{step.action.value} {step.job}: already running as "
                         f"{', '.join(ev.others)}; refusing to start a second copy")
    s.move(Phase.SUBMITTING)
    return Decision(s, effect_for(cfg, s, now), f"submitting {step.job} as {s.pending_job_id}")


def _submitting(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, (Submitted, AlreadySubmitted)):
        return unexpected(cfg, s, ev, now)
    s.pending_job_id = ev.job_id
    s.in_doubt, s.refusal = False, ""
    s.move(Phase.STARTING)
    how = "submitted" if isinstance(ev, Submitted) else "was already submitted"
    return Decision(s, effect_for(cfg, s, now), f"{step.job} {how} as {ev.job_id}")


def _confirming(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, JobState):
        return unexpected(cfg, s, ev, now)
    if ev.state is not None:
        s.in_doubt, s.refusal = False, ""
        s.move(Phase.STARTING)
        return Decision(s, effect_for(cfg, s, now), f"{step.job} ({s.pending_job_id}) "
                        f"appeared ({ev.state.value}): the earlier submission arrived")
    if now < s.grace_until:
        return poll_again(cfg, s, now)
    if now >= s.deadline:
        refused = f"; last refusal: {s.refusal}" if s.refusal else ""
        return fail_step(cfg, s, now, f"{step.action.value} {step.job}: not submitted before "
                         f"the step's deadline{refused}")
    s.move(Phase.PROBING)
    return Decision(s, effect_for(cfg, s, now), f"{step.job} ({s.pending_job_id}) did not "
                    "appear within the grace period; looking once more, then submitting again")


def _starting(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, JobState):
        return unexpected(cfg, s, ev, now)
    state = ev.state
    if state is JobStatus.RUNNING or (state is JobStatus.FINISHED and step.action is
                                      Action.START):
        s.jobs[step.job] = s.pending_job_id
        if step.job in s.stopped_at:
            s.downtime[step.job] = now - s.stopped_at.pop(step.job)
        if restore_path(cfg, s, step):
            s.move(Phase.VERIFYING)
            return Decision(s, effect_for(cfg, s, now), f"{step.job} is {state.value} as "
                            f"{s.pending_job_id}; checking it restored from "
                            f"{restore_path(cfg, s, step)}")
        return _started(cfg, s, step, now, f"{step.job} is {state.value} as "
                        f"{s.pending_job_id}")
    if state in (JobStatus.FAILED, JobStatus.CANCELED):
        return fail_step(cfg, s, now, f"{step.job} is {state.value} right after submission")
    if now >= s.deadline:
        return fail_step(cfg, s, now, f"{step.job} not RUNNING after {step.timeout:.0f} s")
    return poll_again(cfg, s, now)


def _verifying(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, Restored):
        return unexpected(cfg, s, ev, now)
    wanted = restore_path(cfg, s, step) or ""
    job_id = s.jobs.get(step.job, "")
    if ev.path is not None and ev.path.rstrip("/") == wanted.rstrip("/"):
        return _started(cfg, s, step, now, f"{step.job} ({job_id}) restored from {wanted}")
    if ev.path is None and now < s.deadline:
        return poll_again(cfg, s, now)
    got = ev.path if ev.path is not None else "no savepoint (or never reported one)"
    return fail_step(cfg, s, now, f"{step.job} ({job_id}) restored from {got}, not from "
                     f"{wanted}: CHECK {step.job.upper()}, IT RUNS FROM OTHER STATE")


def _started(cfg: CycleConfig, s: CycleState, step: Step, now: float, note: str) -> Decision:
    if s.status is CycleStatus.RECOVERING:
        s.recovery.pop(0)
    return step_done(cfg, s, now, note)


def _waiting(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if not isinstance(ev, JobState):
        return unexpected(cfg, s, ev, now)
    state = ev.state
    if state is not None and state.value == step.state:
        if state.terminal:
            s.jobs.pop(step.job, None)
        return step_done(cfg, s, now, f"{step.job} reached {state.value}")
    if state is None or state.terminal:
        s.jobs.pop(step.job, None)
        return fail_step(cfg, s, now, f"wait {step.job}: job is "
                         f"{state.value if state else 'GONE'}, expected {step.state}")
    if now >= s.deadline:
        s.failure = f"wait {step.job}: still {state.value} after {step.timeout:.0f} s"
        s.move(Phase.ABORTING)
        return Decision(s, effect_for(cfg, s, now), s.failure + "; cancelling it")
    return poll_again(cfg, s, now)


def _aborting(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if step.action is Action.CANCEL and not s.failure:
        if isinstance(ev, Failed):
            return fail_step(cfg, s, now, f"cancel {step.job}: {ev.reason}")
        s.move(Phase.CANCELLING)
        return Decision(s, effect_for(cfg, s, now), f"cancel of {step.job} requested")
    s.jobs.pop(step.job, None)
    return fail_step(cfg, s, now, s.failure or f"{step.job} cancelled")


def _cancelling(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if isinstance(ev, JobState) and (ev.state is None or ev.state.terminal):
        s.jobs.pop(step.job, None)
        return step_done(cfg, s, now, f"{step.job} is "
                         f"{ev.state.value if ev.state else 'GONE'}")
    if now >= s.deadline:
        return fail_step(cfg, s, now, f"cancel {step.job}: not cancelled in time")
    return poll_again(cfg, s, now)


def _sleeping(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    if now < s.step_started + step.duration:
        return Decision(s, effect_for(cfg, s, now))
    return step_done(cfg, s, now, f"slept {step.duration:.1f} s")


def _start(cfg: CycleConfig, s: CycleState, step: Step, ev: Event, now: float) -> Decision:
    enter_step(cfg, s, now)
    return Decision(s, effect_for(cfg, s, now))


HANDLERS = {
    Phase.START: _start, Phase.FINDING: _finding, Phase.TRIGGERING: _triggering,
    Phase.POLLING: _polling, Phase.REVERTING: _reverting, Phase.CHECKING: _checking,
    Phase.BACKOFF: _backoff, Phase.STOPPING: _stopping, Phase.SLOTS: _slots,
    Phase.PROBING: _probing, Phase.SUBMITTING: _submitting, Phase.CONFIRMING: _confirming,
    Phase.STARTING: _starting, Phase.VERIFYING: _verifying, Phase.WAITING: _waiting,
    Phase.ABORTING: _aborting, Phase.CANCELLING: _cancelling, Phase.SLEEPING: _sleeping,
}
assert set(HANDLERS) == set(Phase), "every phase needs a handler"
