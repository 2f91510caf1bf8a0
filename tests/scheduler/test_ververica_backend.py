"""Ververica Platform backend against the in-process fake Application Manager API
(harness_pool.testing.fake_ververica): no platform can run here."""

from __future__ import annotations

import pytest

from harness_pool._errors import ConfigError
from harness_pool.scheduler.backends.ververica import VervericaBackend
from harness_pool.scheduler.runner import CycleRunner
from harness_pool.scheduler.store import FileStateStore
from harness_pool.testing.fake_backend import FakeClock
from harness_pool.testing.fake_ververica import FakeVerverica

from .helpers import cycle

TOKEN = "07044996-42e3-4078-a0a9-74927531f355"


@pytest.fixture
def vvp():
    with FakeVerverica(token=TOKEN) as fake:
        fake.add_deployment("streaming", "RUNNING")
        fake.add_deployment("bounded-job", "CANCELLED")
        yield fake


def vvp_cycle(vvp, tmp_path, token_file=None, **over):
    path = token_file or tmp_path / "token"
    if token_file is None:
        path.write_text(TOKEN + "\n")
    return cycle(tmp_path, backend={"type": "ververica", "url": vvp.url,
                                    "token_file": str(path)},
                 jobs={"streaming": {"resource": "streaming"},
                       "bounded": {"resource": "bounded-job"}}, **over)


def runner(vvp, tmp_path, **over):
    cfg = vvp_cycle(vvp, tmp_path, **over)
    return CycleRunner(cfg, VervericaBackend(cfg.backend), FileStateStore(cfg.state.path),
                       clock=FakeClock(), kill_at="")


def test_cycle_resumes_from_the_suspend_savepoint_and_verifies_it(vvp, tmp_path):
    state = runner(vvp, tmp_path).run_once()
    assert state.cycles[-1].ok, state.cycles[-1].failure
    taken = state.history[-1].path
    assert taken.startswith("s3://sp/streaming/")
    assert vvp.restored_from == [("bounded-job", None), ("streaming", taken)]
    assert vvp.deployments["streaming"]["status"]["state"] == "RUNNING"
    assert vvp.deployments["bounded-job"]["status"]["state"] == "FINISHED"
    assert vvp.jobs[-1]["spec"]["savepointLocation"] == taken
    assert vvp.unauthorized == 0


def test_the_suspend_leaves_upgrade_strategy_as_it_was(vvp, tmp_path):
    runner(vvp, tmp_path).run_once()
    assert vvp.deployments["streaming"]["spec"]["upgradeStrategy"] == {"kind": "STATELESS"}


def test_a_retained_checkpoint_does_not_block_a_valid_resume(vvp, tmp_path):
    r = runner(vvp, tmp_path, steps=[{"action": "suspend", "job": "streaming"},
                                     {"action": "sleep", "duration": "1s"},
                                     {"action": "resume", "job": "streaming"}])
    original = r.backend.submit

    def retained_then_submit(*args):
        vvp.retain_checkpoint("streaming")  # newest of any origin, skipped by LATEST_SAVEPOINT
        return original(*args)

    r.backend.submit = retained_then_submit  # type: ignore[method-assign]
    state = r.run_once()
    assert state.cycles[-1].ok, state.cycles[-1].failure
    assert vvp.restored_from[-1] == ("streaming", state.history[-1].path)


def test_no_savepoint_means_empty_state(vvp, tmp_path):
    state = runner(vvp, tmp_path, steps=[{"action": "start", "job": "bounded"}]).run_once()
    assert state.cycles[-1].ok
    assert vvp.deployments["bounded-job"]["spec"]["restoreStrategy"] == {"kind": "NONE"}


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


def test_retention_deletes_asynchronously_and_checks_again_next_cycle(vvp, tmp_path):
    r = runner(vvp, tmp_path, savepoints={"keep": 1})
    first = r.run_once().history[-1].path
    second = r.run_once()
    assert [h.status.value for h in second.history if h.path == first] == ["DISPOSING"], \
        "PENDING_DELETION is not done yet"
    third = r.run_once()
    assert first not in [h.path for h in third.history]
    assert not vvp.live(first)


def test_failed_deletion_stays_disposing_and_is_retried(vvp, tmp_path):
    r = runner(vvp, tmp_path, savepoints={"keep": 1})
    first = r.run_once().history[-1].path
    vvp.switches.deletion_fails.add(first)
    r.run_once()
    state = r.run_once()
    assert [h.status.value for h in state.history if h.path == first] == ["DISPOSING"]
    vvp.switches.deletion_fails.clear()
    r.run_once()
    final = r.run_once()
    assert first not in [h.path for h in final.history] and not vvp.live(first)


SAVEPOINT_STEP = [{"action": "savepoint", "job": "streaming", "timeout": "60s"}]


def test_savepoint_step_requests_one_savepoint_and_records_it(vvp, tmp_path):
    state = runner(vvp, tmp_path, steps=SAVEPOINT_STEP).run_once()
    assert state.cycles[-1].ok, state.cycles[-1].failure
    (taken,) = [s for s in vvp.savepoints if s["metadata"]["origin"] == "USER_REQUEST"]
    assert state.history[-1].path == taken["spec"]["savepointLocation"] != ""
    assert state.history[-1].ref == taken["metadata"]["id"]
    assert vvp.deployments["streaming"]["status"]["state"] == "RUNNING"  # never stopped


def test_savepoint_step_asked_twice_posts_once(vvp, tmp_path):
    cfg = vvp_cycle(vvp, tmp_path, steps=SAVEPOINT_STEP)
    backend = VervericaBackend(cfg.backend)
    job = cfg.jobs["streaming"]
    backend.trigger_savepoint(job, "streaming", "c1/sp", "")
    backend.trigger_savepoint(job, "streaming", "c1/sp", "")  # a restarted scheduler
    assert len(vvp.savepoints) == 1
    assert backend.savepoint_status(job, "streaming", "c1/sp", False).state.value == "COMPLETED"


def test_failing_savepoint_step_is_reported(vvp, tmp_path):
    vvp.switches.savepoint_fails.add("streaming")
    state = runner(vvp, tmp_path, steps=SAVEPOINT_STEP).run_once()
    assert "Savepoint failed: checkpoint declined" in state.cycles[-1].failure
    assert vvp.deployments["streaming"]["status"]["state"] == "RUNNING"


def test_a_wrong_token_is_refused_clearly_and_a_rotated_one_is_picked_up(vvp, tmp_path):
    token = tmp_path / "token"
    token.write_text("stale")
    cfg = vvp_cycle(vvp, tmp_path, token_file=token)
    backend = VervericaBackend(cfg.backend)
    with pytest.raises(Exception, match="HTTP 401.*the API token in .* was refused"):
        backend.find_running(cfg.jobs["streaming"])
    token.write_text(TOKEN)  # the Secret was rotated
    assert backend.find_running(cfg.jobs["streaming"]) == ["streaming"]
    assert TOKEN not in repr(backend.__dict__.get("api").__dict__)


def test_token_from_the_environment_and_config_checks(vvp, tmp_path, monkeypatch):
    monkeypatch.setenv("VVP_TOKEN", TOKEN)
    cfg = cycle(tmp_path, backend={"type": "ververica", "url": vvp.url, "token_env": "VVP_TOKEN"},
                jobs={"streaming": {"resource": "streaming"}, "bounded": {"resource": "b"}})
    assert VervericaBackend(cfg.backend).find_running(cfg.jobs["streaming"]) == ["streaming"]
    monkeypatch.delenv("VVP_TOKEN")
    with pytest.raises(ConfigError, match="backend.token_env: environment variable VVP_TOKEN"):
        VervericaBackend(cfg.backend)
    with pytest.raises(ConfigError) as info:
        cycle(backend={"type": "ververica", "url": "http://x", "token_file": "a",
                       "token_env": "B"},
              jobs={"s": {"resource": "s"}}, steps=[{"action": "savepoint", "job": "s"}],
              savepoints={"dir": "s3://x"})
    assert "backend.token_env: both token_file and token_env given" in str(info.value)
    assert "savepoints.dir: got 's3://x'; expected nothing: ververica takes savepoints" in \
        str(info.value)


def test_restart_after_each_request_reached_the_platform_does_not_repeat_it(tmp_path):
    """Stopped right after each effect ran (its answer never saved): a fresh scheduler finishes
    the cycle with one suspend savepoint, one bounded start, one resume, from that savepoint."""
    from .test_runner import Crash, CrashingRunner

    def crashing(vvp, where, point):
        cfg = vvp_cycle(vvp, where)
        r = CrashingRunner(cfg, VervericaBackend(cfg.backend), FileStateStore(cfg.state.path),
                           clock=FakeClock(), kill_at=point)
        r.seen = []
        return r

    def platform():
        fake = FakeVerverica(token=TOKEN).start()
        fake.add_deployment("streaming", "RUNNING")
        fake.add_deployment("bounded-job", "CANCELLED")
        return fake

    probe_vvp = platform()
    try:
        (tmp_path / "probe").mkdir()
        probe = crashing(probe_vvp, tmp_path / "probe", "")
        probe.run_once()
    finally:
        probe_vvp.stop()
    points = [p for p in sorted(set(probe.seen), key=probe.seen.index) if p.startswith("after-")]
    assert "after-stop@running:0" in points and "after-submit@running:3" in points
    for i, point in enumerate(points):
        vvp = platform()
        try:
            (tmp_path / str(i)).mkdir()
            with pytest.raises(Crash):
                crashing(vvp, tmp_path / str(i), point).run_once()
            state = runner(vvp, tmp_path / str(i)).run_once()
            assert state.cycles[-1].ok, (point, state.cycles[-1].failure)
            suspends = [s for s in vvp.savepoints if s["metadata"]["origin"] == "SUSPEND"]
            assert len(suspends) == 1, point
            assert vvp.restored_from == [("bounded-job", None),
                                         ("streaming", state.history[-1].path)], point
        finally:
            vvp.stop()
