"""The pure core: table-driven (state, event, now) -> decision cases with named ids."""

from __future__ import annotations

import pytest

from harness_pool._errors import IllegalTransition
from harness_pool.scheduler import core
from harness_pool.scheduler.model import (
    Accepted,
    Begin,
    CycleState,
    CycleStatus,
    Duplicate,
    Failed,
    Found,
    JobState,
    Phase,
    SavepointDone,
    SavepointFailed,
    SavepointPending,
    Submitted,
)

from .helpers import cycle

CFG = cycle()
T0 = 1000.0


def at(step: int, phase: Phase, **fields: object) -> CycleState:
    """A running cycle at ``step`` in ``phase`` (deadline T0 + 60)."""
    s = core.start_cycle(CFG, CycleState(), T0).state
    s.step_index, s.phase, s.deadline = step, phase, T0 + 60
    s.jobs = {"streaming": "s0"}
    for key, value in fields.items():
        setattr(s, key, value)
    return s


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
    ("savepoint-failed-checks-job", at(0, Phase.POLLING), SavepointFailed("disk full"), T0,
     ("RUNNING", "CHECKING", "poll-job"), ""),
    ("failed-savepoint-job-running-backs-off", at(0, Phase.CHECKING), JobState("RUNNING"), T0,
     ("RUNNING", "BACKOFF", "sleep"), ""),
    ("failed-savepoint-retries-exhausted", at(0, Phase.CHECKING, attempt=2), JobState("RUNNING"),
     T0, ("FINISHING", "START", "dispose"), "job left RUNNING"),
    ("failed-savepoint-job-gone-is-loud", at(0, Phase.CHECKING), JobState("FAILED"), T0,
     ("FINISHING", "START", "dispose"), "IS NOT RUNNING"),
    ("stopped-moves-to-start-bounded", at(0, Phase.STOPPING, taken={"streaming": "file:/sp/1"}),
     JobState("FINISHED"), T0, ("RUNNING", "SUBMITTING", "submit"), ""),
    ("submitted-waits-for-running", at(1, Phase.SUBMITTING, pending_job_id="b1"),
     Submitted("b1"), T0, ("RUNNING", "STARTING", "poll-job"), ""),
    ("duplicate-refuses-second-copy", at(1, Phase.SUBMITTING), Duplicate(("x",)), T0,
     ("FINISHING", "START", "dispose"), "refusing to start a second copy"),
    ("bounded-failed-recovers-streaming",
     at(2, Phase.WAITING, jobs={"bounded": "b1"}, taken={"streaming": "file:/sp/1"}),
     JobState("FAILED"), T0, ("RECOVERING", "SUBMITTING", "submit"), "job is FAILED"),
    ("wait-timeout-cancels-first", at(2, Phase.WAITING, jobs={"bounded": "b1"}),
     JobState("RUNNING"), T0 + 61, ("RUNNING", "ABORTING", "cancel"), "still RUNNING"),
    ("temporary-error-retries-same-effect", at(0, Phase.TRIGGERING, trigger_id="t"),
     Failed("unreachable", temporary=True), T0, ("RUNNING", "TRIGGERING", "stop"), ""),
    ("temporary-error-after-deadline-fails", at(0, Phase.TRIGGERING, trigger_id="t"),
     Failed("unreachable", temporary=True), T0 + 61, ("FINISHING", "START", "dispose"),
     "unreachable"),
    ("permanent-error-fails-at-once", at(0, Phase.TRIGGERING, trigger_id="t"),
     Failed("HTTP 404: not found", temporary=False), T0, ("FINISHING", "START", "dispose"),
     "404"),
    ("restart-reissues-same-trigger", at(0, Phase.TRIGGERING, trigger_id="t"), Begin(), T0,
     ("RUNNING", "TRIGGERING", "stop"), ""),
    ("resume-failing-in-recovery-says-left-stopped",
     at(3, Phase.STARTING, status=CycleStatus.RECOVERING, recovery=["streaming"],
        taken={"streaming": "file:/sp/1"}, failure="bounded failed"),
     JobState("FAILED"), T0, ("FINISHING", "START", "dispose"), "JOBS LEFT STOPPED"),
]


@pytest.mark.parametrize(("state", "event", "now", "expected", "failure"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(state, event, now, expected, failure):
    before = state.to_dict()
    decision = core.decide(CFG, state, event, now)
    got = decision.state
    assert (got.status.value, got.phase.value, decision.effect.kind) == expected
    assert failure in got.failure
    assert state.to_dict() == before, "decide must not mutate its input"


def test_trigger_ids_are_stable_across_restarts_and_new_per_attempt():
    s = at(0, Phase.FINDING, jobs={})
    first = core.decide(CFG, s, Found(("s0",)), T0).state.trigger_id
    again = core.decide(CFG, s, Found(("s0",)), T0 + 5).state.trigger_id
    assert first == again and len(first) == 32
    retry = core.decide(CFG, at(0, Phase.BACKOFF, attempt=1), Begin(), T0)
    retried = core.decide(CFG, retry.state, Accepted(), T0 + 10).state.trigger_id
    assert retried != first


def test_illegal_phase_transition_names_both_states():
    s = at(0, Phase.SLEEPING)
    with pytest.raises(IllegalTransition, match="cannot go from SLEEPING to POLLING"):
        s.move(Phase.POLLING)


def test_resume_uses_this_cycles_savepoint_not_an_older_one():
    s = at(3, Phase.START, taken={"streaming": "file:/sp/new"}, jobs={})
    decision = core.decide(CFG, s, Begin(), T0)
    assert decision.effect.savepoint == "file:/sp/new"


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
