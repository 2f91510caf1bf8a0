"""The runner with the in-memory fake backend and a fake clock: policy and crash safety.

No sleeps: ``FakeClock.sleep`` only advances time.
"""

from __future__ import annotations

import json

import pytest

from harness_pool.scheduler.leader import Always
from harness_pool.scheduler.model import CycleStatus, JobStatus
from harness_pool.scheduler.runner import CycleRunner, LostActor
from harness_pool.scheduler.store import FileStateStore
from harness_pool.testing.fake_backend import FakeBackend, FakeClock

from .helpers import cycle, runner, with_streaming


def streaming_jobs(backend: FakeBackend) -> list:
    return [j for j in backend.jobs.values()
            if j.name == "streaming" and j.state is JobStatus.RUNNING]


def test_full_cycle_resumes_from_the_savepoint_it_took(tmp_path):
    backend = with_streaming(FakeBackend())
    state = runner(tmp_path, backend).run_once()
    assert state.cycles[-1].ok, state.cycles[-1].failure
    [job] = streaming_jobs(backend)
    assert job.savepoint == state.history[-1].path
    assert [j.state for j in backend.jobs.values() if j.name == "bounded"] == [JobStatus.FINISHED]
    assert state.cycles[-1].downtime["streaming"] > 0


def test_bounded_job_failure_still_resumes_streaming_and_reports_failed(tmp_path):
    backend = with_streaming(FakeBackend(bounded_outcome="FAILED"))
    state = runner(tmp_path, backend).run_once()
    assert not state.cycles[-1].ok
    assert "bounded: job is FAILED" in state.cycles[-1].failure
    [job] = streaming_jobs(backend)
    assert job.savepoint == state.history[-1].path


def test_never_finishing_bounded_job_is_cancelled_and_streaming_resumed(tmp_path):
    backend = with_streaming(FakeBackend(bounded_outcome="NEVER"))
    clock = FakeClock()
    state = runner(tmp_path, backend, clock).run_once()
    assert "still RUNNING after 30 s" in state.cycles[-1].failure
    assert [j.state for j in backend.jobs.values() if j.name == "bounded"] == [JobStatus.CANCELED]
    assert len(streaming_jobs(backend)) == 1
    assert clock.slept >= 30


def test_failed_savepoint_is_retried_with_backoff(tmp_path):
    backend = with_streaming(FakeBackend(fail_savepoints=2))
    clock = FakeClock()
    state = runner(tmp_path, backend, clock).run_once()
    assert state.cycles[-1].ok
    assert state.savepoint_failures == 2
    assert len([c for c in backend.calls if c[0] == "stop"]) == 3
    assert clock.slept >= 1 + 2  # backoff 1 s, then 2 s


def test_savepoint_failing_every_time_leaves_streaming_running(tmp_path):
    backend = with_streaming(FakeBackend(fail_savepoints=99))
    state = runner(tmp_path, backend).run_once()
    assert "failed 3 times (last: disk full); job left RUNNING" in state.cycles[-1].failure
    assert backend.jobs["s0"].state is JobStatus.RUNNING
    assert not [c for c in backend.calls if c[0] == "submit"], "bounded must not start"


def test_unreachable_flink_fails_the_cycle_clearly_and_keeps_state_readable(tmp_path):
    backend = with_streaming(FakeBackend(unreachable=True))
    r = runner(tmp_path, backend)
    state = r.run_once()
    assert "unreachable" in state.cycles[-1].failure
    assert state.status is CycleStatus.IDLE
    json.loads((tmp_path / "state.json").read_text())


def test_no_running_copy_and_two_copies_are_refused(tmp_path):
    state = runner(tmp_path, FakeBackend()).run_once()
    assert "no running copy" in state.cycles[-1].failure
    backend = with_streaming(FakeBackend())
    backend.jobs["s1"] = backend.jobs["s0"].__class__("streaming", JobStatus.RUNNING, None, None)
    state = runner(tmp_path / "b", backend).run_once()
    assert "2 running copies" in state.cycles[-1].failure


def test_retention_disposes_of_savepoints_beyond_keep(tmp_path):
    backend = with_streaming(FakeBackend())
    r = runner(tmp_path, backend, savepoints={"keep": 1})
    first = r.run_once().history[-1].path
    state = r.run_once()
    assert backend.disposed == [first]
    assert [h.path for h in state.history] != [first]
    assert len(state.history) == 1


class Crash(Exception):
    pass


class CrashingRunner(CycleRunner):
    """Raises at a named point, like SIGKILL but in-process: nothing after it runs."""

    seen: list[str]

    def _maybe_die(self, point: str) -> None:
        self.seen.append(point)
        if point == self.kill_at:
            raise Crash(point)


def _points(tmp_path) -> list[str]:
    backend = with_streaming(FakeBackend())
    cfg = cycle(tmp_path / "probe")
    r = CrashingRunner(cfg, backend, FileStateStore(cfg.state.path), clock=FakeClock(),
                       kill_at="")
    r.seen = []
    r.run_once()
    return sorted(set(r.seen), key=r.seen.index)


def test_crash_at_every_point_then_restart_completes_exactly_once(tmp_path):
    points = _points(tmp_path)
    assert "after-stop@running:0" in points and "before-dispose@finishing:4" in points
    for i, point in enumerate(points):
        backend = with_streaming(FakeBackend())
        cfg = cycle(tmp_path / str(i))
        crashing = CrashingRunner(cfg, backend, FileStateStore(cfg.state.path),
                                  clock=FakeClock(), kill_at=point)
        crashing.seen = []
        with pytest.raises(Crash):
            crashing.run_once()
        state = CycleRunner(cfg, backend, FileStateStore(cfg.state.path), clock=FakeClock(),
                            kill_at="").run_once()
        assert state.cycles[-1].ok, (point, state.cycles[-1].failure)
        running = streaming_jobs(backend)
        assert len(running) == 1, point
        assert running[0].savepoint == state.history[-1].path, point
        assert len([j for j in backend.jobs.values() if j.name == "bounded"]) == 1, point
        stops = {c[1] for c in backend.calls if c[0] == "stop"}
        assert stops == {"s0"}, point
        assert len(backend.triggers) == 1, f"{point}: a second savepoint was triggered"


class NotLeader(Always):
    def leading(self) -> bool:
        return False

    def holder(self) -> str:
        return "replica-b"


def test_a_replica_without_the_lease_does_not_act(tmp_path):
    backend = with_streaming(FakeBackend())
    cfg = cycle(tmp_path)
    r = CycleRunner(cfg, backend, FileStateStore(cfg.state.path), clock=FakeClock(),
                    actor=NotLeader(), kill_at="")
    with pytest.raises(LostActor, match="no longer the actor \\(replica-b is\\)"):
        r.run_once()
    assert not [c for c in backend.calls if c[0] in ("stop", "submit")]


def test_metrics_record_cycle_steps_and_downtime(tmp_path):
    from prometheus_client import generate_latest

    r = runner(tmp_path, with_streaming(FakeBackend()))
    r.run_once()
    text = generate_latest(r.metrics.registry).decode()
    assert 'harness_pool_scheduler_cycles_total{cycle="t",result="ok"} 1.0' in text
    assert 'harness_pool_scheduler_step_seconds_count{action="suspend",cycle="t",job="streaming"}' \
        in text
    assert "harness_pool_scheduler_streaming_downtime_seconds{job=\"streaming\"}" in text
    assert "harness_pool_scheduler_savepoint_seconds_count{job=\"streaming\"} 1.0" in text


def test_rescale_to_free_slots_resumes_from_its_own_savepoint(tmp_path):
    backend = with_streaming(FakeBackend(slots=3))
    steps = [{"action": "rescale", "job": "streaming", "parallelism": "free-slots"}]
    state = runner(tmp_path, backend, steps=steps).run_once()
    assert state.cycles[-1].ok, state.cycles[-1].failure
    [job] = streaming_jobs(backend)
    assert job.parallelism == 3 and job.savepoint == state.history[-1].path


def test_stop_request_mid_cycle_leaves_a_resumable_state(tmp_path):
    import threading

    backend = with_streaming(FakeBackend())
    clock = FakeClock()
    clock.stop = threading.Event()  # type: ignore[attr-defined]
    r = runner(tmp_path, backend, clock)
    original = backend.stop_with_savepoint

    def stop_then_signal(*args):
        original(*args)
        clock.stop.set()

    backend.stop_with_savepoint = stop_then_signal  # type: ignore[method-assign]
    state = r.run_once()
    assert state.status is CycleStatus.RUNNING
    clock.stop.clear()
    state = runner(tmp_path, backend).run_once()
    assert state.cycles[-1].ok and len(streaming_jobs(backend)) == 1


def test_savepoint_cancel_and_sleep_steps(tmp_path):
    backend = with_streaming(FakeBackend())
    clock = FakeClock()
    steps = [{"action": "savepoint", "job": "streaming"},
             {"action": "sleep", "duration": "5m"},
             {"action": "cancel", "job": "streaming"}]
    state = runner(tmp_path, backend, clock, steps=steps).run_once()
    assert state.cycles[-1].ok, state.cycles[-1].failure
    assert len(state.history) == 1
    assert backend.jobs["s0"].state is JobStatus.CANCELED
    assert clock.slept >= 300


@pytest.mark.parametrize("refusal", ["recognised", "generic-400"])
def test_killed_inside_the_submission_never_starts_a_second_copy_or_fails(tmp_path, refusal):
    """Killed after the bounded job's submission reached the cluster and before its answer
    was recorded, while the job is not yet visible (PyFlink's driver takes seconds): the
    restarted scheduler waits for it instead of failing on the duplicate refusal."""
    backend = with_streaming(FakeBackend(visible_after=6, generic_refusal=refusal != "recognised"))
    cfg = cycle(tmp_path, backend={"submit_grace": "1s"})
    crashing = CrashingRunner(cfg, backend, FileStateStore(cfg.state.path), clock=FakeClock(),
                              kill_at="after-submit@running:1")
    crashing.seen = []
    with pytest.raises(Crash):
        crashing.run_once()
    state = CycleRunner(cfg, backend, FileStateStore(cfg.state.path), clock=FakeClock(),
                        kill_at="").run_once()
    assert state.cycles[-1].ok, state.cycles[-1].failure
    assert backend.submissions == 2, "bounded once, streaming resumed once"
    assert [j.state for j in backend.jobs.values() if j.name == "bounded"] == [
        JobStatus.FINISHED]


def test_a_resume_that_restored_elsewhere_fails_loudly(tmp_path):
    backend = with_streaming(FakeBackend(restore_elsewhere=True))
    state = runner(tmp_path, backend).run_once()
    failure = state.cycles[-1].failure
    assert "restored from file:/savepoints/savepoint-1-elsewhere, not from " \
        "file:/savepoints/savepoint-1" in failure
    assert "CHECK STREAMING" in failure
    assert len(streaming_jobs(backend)) == 1, "the running copy is left alone, not doubled"


def test_a_backend_bug_does_not_kill_the_loop_mid_cycle(tmp_path):
    backend = with_streaming(FakeBackend())
    original, calls = backend.job_state, []

    def flaky(job, job_id):
        calls.append(job_id)
        if len(calls) == 2:
            raise KeyError("status")  # a shape the backend did not expect
        return original(job, job_id)

    backend.job_state = flaky  # type: ignore[method-assign]
    state = runner(tmp_path, backend).run_once()
    assert state.cycles[-1].ok, state.cycles[-1].failure
