"""The pure core: table-driven (state, event, now) -> decision cases with named ids."""

from __future__ import annotations

import pytest

from harness_pool._errors import IllegalTransition
from harness_pool.scheduler import core
from harness_pool.scheduler.config import Action
from harness_pool.scheduler.events import (
    Accepted,
    AlreadySubmitted,
    Begin,
    DisposalState,
    Disposed,
    EffectKind,
    Failed,
    Found,
    JobState,
    Probed,
    Restored,
    SavepointDone,
    SavepointFailed,
    SavepointPending,
    Submitted,
    Tick,
)
from harness_pool.scheduler.model import (
    PHASE_TRANSITIONS,
    CycleState,
    CycleStatus,
    JobStatus,
    Phase,
    Request,
    RequestKind,
    RequestStatus,
    SavepointRecord,
    SavepointStatus,
)
from harness_pool.scheduler.steps import effect_for

from .helpers import cycle

CFG = cycle()
T0 = 1000.0
RUNNING, FINISHED, FAILED = JobStatus.RUNNING, JobStatus.FINISHED, JobStatus.FAILED


def at(step: int, phase: Phase, **fields: object) -> CycleState:
    """A running cycle at ``step`` in ``phase`` (deadline T0 + 60)."""
    s = core.start_cycle(CFG, CycleState(), T0).state
    s.step_index, s.phase, s.deadline = step, phase, T0 + 60
    s.jobs = {"streaming": "s0"}
    for key, value in fields.items():
        setattr(s, key, value)
    return s


TAKEN = {"streaming": "file:/sp/1"}
CASES = [
    # id, state, event, now, expected (status, phase, effect kind), failure contains
    ("find-one-triggers-stop", at(0, Phase.FINDING, jobs={}), Found(("s0",)), T0,
     ("RUNNING", "TRIGGERING", "stop"), ""),
    ("find-none-fails-nothing-to-resume", at(0, Phase.FINDING, jobs={}), Found(()), T0,
     ("FINISHING", "START", "dispose"), "no running copy"),
    ("find-two-refuses-to-guess", at(0, Phase.FINDING, jobs={}), Found(("a", "b")), T0,
     ("FINISHING", "START", "dispose"), "2 running copies"),
    ("stop-accepted-polls", at(0, Phase.TRIGGERING, trigger_id="t"), Accepted(), T0,
     ("RUNNING", "POLLING", "poll-savepoint"), ""),
    ("savepoint-pending-polls-again", at(0, Phase.POLLING), SavepointPending(), T0,
     ("RUNNING", "POLLING", "poll-savepoint"), ""),
    ("savepoint-pending-past-deadline-fails", at(0, Phase.POLLING), SavepointPending(), T0 + 61,
     ("FINISHING", "START", "dispose"), "timed out"),
    ("savepoint-done-waits-for-stop", at(0, Phase.POLLING), SavepointDone("file:/sp/1"), T0,
     ("RUNNING", "STOPPING", "poll-job"), ""),
    ("failed-stop-savepoint-reverts-first", at(0, Phase.POLLING), SavepointFailed("disk full"),
     T0, ("RUNNING", "REVERTING", "revert-stop"), ""),
    ("reverted-then-checks-job", at(0, Phase.REVERTING), Accepted(), T0,
     ("RUNNING", "CHECKING", "poll-job"), ""),
    ("failed-savepoint-job-running-backs-off", at(0, Phase.CHECKING), JobState(RUNNING), T0,
     ("RUNNING", "BACKOFF", "sleep"), ""),
    ("failed-savepoint-retries-exhausted", at(0, Phase.CHECKING, attempt=2), JobState(RUNNING),
     T0, ("FINISHING", "START", "dispose"), "job left RUNNING"),
    ("failed-savepoint-job-gone-is-loud", at(0, Phase.CHECKING), JobState(FAILED), T0,
     ("FINISHING", "START", "dispose"), "IS NOT RUNNING"),
    ("stopped-probes-before-submitting-bounded", at(0, Phase.STOPPING, taken=TAKEN),
     JobState(FINISHED), T0, ("RUNNING", "PROBING", "probe"), ""),
    ("probe-nothing-submits", at(1, Phase.PROBING, pending_job_id="b1"), Probed(None, ()), T0,
     ("RUNNING", "SUBMITTING", "submit"), ""),
    ("probe-finds-own-id-does-not-submit", at(1, Phase.PROBING, pending_job_id="b1"),
     Probed(FINISHED, ()), T0, ("RUNNING", "STARTING", "poll-job"), ""),
    ("probe-other-copy-refuses-second", at(1, Phase.PROBING, pending_job_id="b1"),
     Probed(None, ("x",)), T0, ("FINISHING", "START", "dispose"),
     "refusing to start a second copy"),
    ("submitted-waits-for-running", at(1, Phase.SUBMITTING, pending_job_id="b1"),
     Submitted("b1"), T0, ("RUNNING", "STARTING", "poll-job"), ""),
    ("already-submitted-is-not-a-failure", at(1, Phase.SUBMITTING, pending_job_id="b1"),
     AlreadySubmitted("b1"), T0, ("RUNNING", "STARTING", "poll-job"), ""),
    ("submit-broke-off-confirms-before-resending", at(1, Phase.SUBMITTING, pending_job_id="b1"),
     Failed("connection reset", temporary=True), T0, ("RUNNING", "CONFIRMING", "poll-job"), ""),
    ("refusal-in-doubt-is-maybe-duplicate",
     at(1, Phase.SUBMITTING, pending_job_id="b1", in_doubt=True),
     Failed("HTTP 400: Could not execute application", temporary=False), T0,
     ("RUNNING", "CONFIRMING", "poll-job"), ""),
    ("clear-refusal-fails-at-once", at(1, Phase.SUBMITTING, pending_job_id="b1"),
     Failed("HTTP 400: bad jar", temporary=False), T0, ("FINISHING", "START", "dispose"),
     "bad jar"),
    ("confirming-sees-the-job", at(1, Phase.CONFIRMING, pending_job_id="b1",
                                   grace_until=T0 + 30), JobState(RUNNING), T0,
     ("RUNNING", "STARTING", "poll-job"), ""),
    ("confirming-waits-within-grace", at(1, Phase.CONFIRMING, pending_job_id="b1",
                                         grace_until=T0 + 30), JobState(None), T0 + 10,
     ("RUNNING", "CONFIRMING", "poll-job"), ""),
    ("confirming-after-grace-looks-again", at(1, Phase.CONFIRMING, pending_job_id="b1",
                                              grace_until=T0 + 30), JobState(None), T0 + 31,
     ("RUNNING", "PROBING", "probe"), ""),
    ("confirming-past-deadline-fails-with-refusal",
     at(1, Phase.CONFIRMING, pending_job_id="b1", grace_until=T0 + 30, refusal="HTTP 400"),
     JobState(None), T0 + 61, ("FINISHING", "START", "dispose"), "last refusal: HTTP 400"),
    ("resumed-running-verifies-restore",
     at(3, Phase.STARTING, pending_job_id="s1", taken=TAKEN, jobs={}), JobState(RUNNING), T0,
     ("RUNNING", "VERIFYING", "verify"), ""),
    ("restore-verified-finishes",
     at(3, Phase.VERIFYING, taken=TAKEN, jobs={"streaming": "s1"}), Restored("file:/sp/1/"),
     T0, ("FINISHING", "START", "dispose"), ""),
    ("restore-not-reported-yet-polls",
     at(3, Phase.VERIFYING, taken=TAKEN, jobs={"streaming": "s1"}), Restored(None), T0,
     ("RUNNING", "VERIFYING", "verify"), ""),
    ("restore-from-another-savepoint-fails-naming-both",
     at(3, Phase.VERIFYING, taken=TAKEN, jobs={"streaming": "s1"}), Restored("file:/sp/0"),
     T0, ("FINISHING", "START", "dispose"), "restored from file:/sp/0, not from file:/sp/1"),
    ("duplicate-in-recovery-means-running",
     at(3, Phase.PROBING, status=CycleStatus.RECOVERING, recovery=["streaming"], taken=TAKEN,
        jobs={}, pending_job_id="r1"), Probed(None, ("s0",)), T0,
     ("FINISHING", "START", "dispose"), ""),
    ("bounded-failed-recovers-streaming",
     at(2, Phase.WAITING, jobs={"bounded": "b1"}, taken=TAKEN),
     JobState(FAILED), T0, ("RECOVERING", "PROBING", "probe"), "job is FAILED"),
    ("wait-timeout-cancels-first", at(2, Phase.WAITING, jobs={"bounded": "b1"}),
     JobState(RUNNING), T0 + 61, ("RUNNING", "ABORTING", "cancel"), "still RUNNING"),
    ("temporary-error-retries-same-effect", at(0, Phase.TRIGGERING, trigger_id="t"),
     Failed("unreachable", temporary=True), T0, ("RUNNING", "TRIGGERING", "stop"), ""),
    ("temporary-error-after-deadline-fails", at(0, Phase.TRIGGERING, trigger_id="t"),
     Failed("unreachable", temporary=True), T0 + 61, ("FINISHING", "START", "dispose"),
     "unreachable"),
    ("permanent-error-fails-at-once", at(0, Phase.TRIGGERING, trigger_id="t"),
     Failed("HTTP 404: not found", temporary=False), T0, ("FINISHING", "START", "dispose"),
     "404"),
    ("refused-trigger-in-doubt-polls-it",
     at(0, Phase.TRIGGERING, trigger_id="t", in_doubt=True),
     Failed("HTTP 404: job not found", temporary=False), T0,
     ("RUNNING", "POLLING", "poll-savepoint"), ""),
    ("restart-reissues-same-trigger", at(0, Phase.TRIGGERING, trigger_id="t"), Begin(), T0,
     ("RUNNING", "TRIGGERING", "stop"), ""),
    ("restart-mid-submission-waits-for-grace", at(1, Phase.SUBMITTING, pending_job_id="b1"),
     Begin(), T0, ("RUNNING", "CONFIRMING", "poll-job"), ""),
    ("resume-failing-in-recovery-says-left-stopped",
     at(3, Phase.STARTING, status=CycleStatus.RECOVERING, recovery=["streaming"],
        taken=TAKEN, failure="bounded failed"),
     JobState(FAILED), T0, ("FINISHING", "START", "dispose"), "JOBS LEFT STOPPED"),
]


@pytest.mark.parametrize(("state", "event", "now", "expected", "failure"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(state, event, now, expected, failure):
    before = state.to_dict()
    decision = core.decide(CFG, state, event, now)
    got = decision.state
    assert (got.status.value, got.phase.value, decision.effect.kind.value) == expected
    assert failure in got.failure
    assert state.to_dict() == before, "decide must not mutate its input"


def test_every_phase_has_an_effect_and_a_transition_row():
    for phase in Phase:
        assert phase in PHASE_TRANSITIONS
        state = at(1 if phase in (Phase.PROBING, Phase.SUBMITTING) else 0, phase)
        assert effect_for(CFG, state, T0).kind in EffectKind


def test_trigger_ids_are_stable_across_restarts_and_new_per_attempt():
    s = at(0, Phase.FINDING, jobs={})
    first = core.decide(CFG, s, Found(("s0",)), T0).state.trigger_id
    again = core.decide(CFG, s, Found(("s0",)), T0 + 5).state.trigger_id
    assert first == again and len(first) == 32
    retry = core.decide(CFG, at(0, Phase.BACKOFF, attempt=1), Tick(), T0).state.trigger_id
    assert retry != first


def test_illegal_phase_transition_names_both_states():
    s = at(0, Phase.SLEEPING)
    with pytest.raises(IllegalTransition, match="cannot go from SLEEPING to POLLING"):
        s.move(Phase.POLLING)


def test_illegal_savepoint_transition_names_both_states():
    record = SavepointRecord("streaming", "file:/sp/1", T0, "c")
    with pytest.raises(IllegalTransition, match="cannot go from COMPLETED to DISPOSED"):
        record.move(SavepointStatus.DISPOSED)


def test_resume_uses_this_cycles_savepoint_not_an_older_one():
    s = at(3, Phase.START, taken={"streaming": "file:/sp/new"}, jobs={},
           history=[SavepointRecord("streaming", "file:/sp/old", T0 - 99, "old")])
    first = core.decide(CFG, s, Begin(), T0)
    assert first.effect.kind is EffectKind.PROBE
    sent = core.decide(CFG, first.state, Probed(None, ()), T0)
    assert sent.effect.savepoint == "file:/sp/new"


def test_a_cycle_runs_under_the_plan_it_started_with():
    s = core.start_cycle(CFG, CycleState(), T0).state
    edited = cycle(steps=[{"action": "savepoint", "job": "streaming"}])
    d = core.decide(edited, s, Found(("s0",)), T0)
    assert d.effect.kind is EffectKind.STOP, "the edited file must not change the running cycle"
    assert [st.action for st in d.state.plan.steps] == [Action.SUSPEND, Action.START,
                                                          Action.WAIT, Action.RESUME]
    assert core.start_cycle(edited, CycleState(), T0).state.plan.steps[0].action is \
        Action.SAVEPOINT


@pytest.mark.parametrize(("schedule", "last", "now", "due"), [
    ({"every": "1h"}, None, 100.0, 100.0),
    ({"every": "1h"}, 100.0, 200.0, 3700.0),
    ({"every": "1h"}, 100.0, 9999.0, 9999.0),
    ({"cron": "0 * * * *", "timezone": "UTC"}, None, 1800.0, 3600.0),
], ids=["every-first", "every-next", "every-overdue", "cron-hourly"])
def test_next_due(schedule, last, now, due):
    assert core.next_due(cycle(schedule=schedule), last, now) == due


def test_on_demand_only_has_no_due_time():
    assert core.next_due(CFG, None, T0) is None


def test_savepoint_lost_mid_poll_is_reported_loudly():
    s = at(0, Phase.POLLING, stopped_at={"streaming": T0})
    decision = core.decide(CFG, s, Failed("trigger unknown", temporary=False), T0)
    assert "CHECK STREAMING: A STOP WAS REQUESTED AND NO SAVEPOINT IS KNOWN" in \
        decision.state.failure


# -- retention --------------------------------------------------------------------------


def _history(n: int) -> list[SavepointRecord]:
    return [SavepointRecord("streaming", f"file:/sp/{i}", T0 + i, f"c{i}") for i in range(n)]


def test_retention_marks_beyond_keep_before_disposing_and_keeps_the_rest():
    s = at(3, Phase.VERIFYING, taken={"streaming": "file:/sp/3"}, jobs={"streaming": "s1"},
           history=_history(4))
    d = core.decide(CFG, s, Restored("file:/sp/3"), T0)  # keep: 2
    assert d.effect.kind is EffectKind.DISPOSE
    assert [p for p, _ in d.effect.disposals] == ["file:/sp/0", "file:/sp/1"]
    assert [r.status for r in d.state.history] == [SavepointStatus.DISPOSING] * 2 + \
        [SavepointStatus.COMPLETED] * 2, "intent persisted before the disposal"
    done = core.decide(CFG, d.state, Disposed((("file:/sp/0", DisposalState.DONE, ""),
                                               ("file:/sp/1", DisposalState.PENDING, "x"))),
                       T0)
    assert done.state.status is CycleStatus.IDLE
    assert [(r.path, r.status) for r in done.state.history] == [
        ("file:/sp/1", SavepointStatus.DISPOSING), ("file:/sp/2", SavepointStatus.COMPLETED),
        ("file:/sp/3", SavepointStatus.COMPLETED)], "a pending disposal is asked again later"


# -- manual requests ---------------------------------------------------------------------


def test_requests_are_queued_once_and_bad_ones_refused_with_a_reason():
    reqs = [Request("r1", RequestKind.SAVEPOINT, job="streaming"),
            Request("r2", RequestKind.SAVEPOINT, job="nope"),
            Request("r3", RequestKind.RESUME, job="streaming")]
    s, notes = core.accept_requests(CFG, CycleState(), reqs, T0)
    again, _ = core.accept_requests(CFG, s, reqs, T0 + 1)
    assert [(r.id, r.status) for r in again.requests] == [
        ("r1", RequestStatus.QUEUED), ("r2", RequestStatus.FAILED), ("r3", RequestStatus.FAILED)]
    assert "unknown job 'nope'" in again.requests[1].result
    assert "no savepoint of streaming in the history" in again.requests[2].result
    assert len(notes) == 3


def test_savepoint_request_runs_as_a_manual_cycle_and_reports_the_path():
    s, _ = core.accept_requests(CFG, CycleState(), [Request("r1", RequestKind.SAVEPOINT,
                                                            job="streaming")], T0)
    d = core.start_request(CFG, s, "r1", T0)
    assert d.state.request("r1").status is RequestStatus.RUNNING
    assert d.effect.kind is EffectKind.FIND
    d = core.decide(CFG, d.state, Found(("s0",)), T0)
    assert d.effect.kind is EffectKind.SAVEPOINT
    d = core.decide(CFG, d.state, Accepted(), T0)
    d = core.decide(CFG, d.state, SavepointDone("file:/sp/m", "ref-1"), T0)
    d = core.decide(CFG, d.state, Disposed(()), T0)
    assert d.state.status is CycleStatus.IDLE
    assert d.state.request("r1").result == "file:/sp/m"
    assert d.state.history[-1].ref == "ref-1"
    assert d.state.last_scheduled() is None, "a manual cycle does not move the schedule"


def test_dispose_request_marks_the_savepoint_then_disposes_it():
    s = CycleState(history=_history(2))
    s, _ = core.accept_requests(CFG, s, [Request("d1", RequestKind.DISPOSE,
                                                 path="file:/sp/0")], T0)
    d = core.start_request(CFG, s, "d1", T0)
    assert d.effect.disposals == (("file:/sp/0", ""),)
    d = core.decide(CFG, d.state, Disposed((("file:/sp/0", DisposalState.DONE, ""),)), T0)
    assert d.state.request("d1").status is RequestStatus.DONE
    assert [r.path for r in d.state.history] == ["file:/sp/1"]
