"""Ververica Platform backend against the in-process fake REST server
(harness_pool.testing.fake_ververica): no platform can run here."""

from __future__ import annotations

import pytest

from harness_pool.scheduler.backends.ververica import VervericaBackend
from harness_pool.scheduler.runner import CycleRunner
from harness_pool.scheduler.store import FileStateStore
from harness_pool.testing.fake_backend import FakeClock
from harness_pool.testing.fake_ververica import FakeVerverica

from .helpers import cycle


@pytest.fixture
def vvp():
    with FakeVerverica() as fake:
        fake.add_deployment("streaming", "RUNNING")
        fake.add_deployment("bounded-job", "CANCELLED")
        yield fake


def runner(vvp, tmp_path, **over):
    cfg = cycle(tmp_path, backend={"type": "ververica", "url": vvp.url},
                jobs={"streaming": {"resource": "streaming"},
                      "bounded": {"resource": "bounded-job"}}, **over)
    return CycleRunner(cfg, VervericaBackend(cfg.backend), FileStateStore(cfg.state.path),
                       clock=FakeClock(), kill_at="")


def test_cycle_suspends_runs_bounded_and_resumes_from_the_suspend_savepoint(vvp, tmp_path):
    state = runner(vvp, tmp_path).run_once()
    assert state.cycles[-1].ok, state.cycles[-1].failure
    taken = state.history[-1].path
    assert taken.startswith("s3://sp/streaming/")
    assert vvp.restored_from == [("bounded-job", None), ("streaming", taken)]
    assert vvp.deployments["streaming"]["status"]["state"] == "RUNNING"
    assert vvp.deployments["bounded-job"]["status"]["state"] == "FINISHED"


def test_failed_suspend_savepoint_keeps_streaming_running(vvp, tmp_path):
    vvp.switches.savepoint_fails.add("streaming")
    state = runner(vvp, tmp_path).run_once()
    assert "Savepoint failed: checkpoint declined" in state.cycles[-1].failure
    assert vvp.deployments["streaming"]["spec"]["state"] == "RUNNING"
    assert vvp.restored_from == []


def test_never_finishing_bounded_deployment_is_cancelled(vvp, tmp_path):
    vvp.switches.never_finishes.add("bounded-job")
    state = runner(vvp, tmp_path).run_once()
    assert "still RUNNING after 30 s" in state.cycles[-1].failure
    assert vvp.deployments["bounded-job"]["spec"]["state"] == "CANCELLED"
    assert vvp.restored_from[-1] == ("streaming", state.history[-1].path)


def test_retention_deletes_old_savepoints_on_the_platform(vvp, tmp_path):
    r = runner(vvp, tmp_path, savepoints={"keep": 1})
    first = r.run_once().history[-1].path
    r.run_once()
    locations = [s["spec"]["savepointLocation"] for s in vvp.savepoints]
    assert first not in locations and len(locations) == 1


SAVEPOINT_STEP = [{"action": "savepoint", "job": "streaming", "timeout": "60s"}]


def test_savepoint_step_requests_one_savepoint_and_records_it(vvp, tmp_path):
    state = runner(vvp, tmp_path, steps=SAVEPOINT_STEP).run_once()
    assert state.cycles[-1].ok, state.cycles[-1].failure
    (taken,) = [s for s in vvp.savepoints if s["metadata"]["origin"] == "USER_REQUEST"]
    assert state.history[-1].path == taken["spec"]["savepointLocation"] != ""
    assert vvp.deployments["streaming"]["status"]["state"] == "RUNNING"  # never stopped


def test_savepoint_step_asked_twice_posts_once(vvp, tmp_path):
    cfg = cycle(tmp_path, backend={"type": "ververica", "url": vvp.url},
                jobs={"streaming": {"resource": "streaming"},
                      "bounded": {"resource": "bounded-job"}}, steps=SAVEPOINT_STEP)
    backend = VervericaBackend(cfg.backend)
    job = cfg.jobs["streaming"]
    backend.trigger_savepoint(job, "streaming", "c1/sp", "")
    backend.trigger_savepoint(job, "streaming", "c1/sp", "")  # a restarted scheduler
    assert len(vvp.savepoints) == 1
    assert backend.savepoint_status(job, "streaming", "c1/sp").status == "COMPLETED"


def test_failing_savepoint_step_is_reported(vvp, tmp_path):
    vvp.switches.savepoint_fails.add("streaming")
    state = runner(vvp, tmp_path, steps=SAVEPOINT_STEP).run_once()
    assert "Savepoint failed: checkpoint declined" in state.cycles[-1].failure
    assert vvp.deployments["streaming"]["status"]["state"] == "RUNNING"
