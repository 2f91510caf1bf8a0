"""The operator backend with the real ``kubernetes`` client against the in-process fake API
server and operator (harness_pool.testing.fake_kube / fake_operator), in both snapshot modes:
FlinkStateSnapshot resources (operator 1.10+, the default) and legacy status fields
(resources disabled; operator 1.9). No real cluster can run here.
"""

from __future__ import annotations

import pytest

from harness_pool._errors import PermanentError
from harness_pool.scheduler.backends.operator import OperatorBackend, snapshot_name
from harness_pool.scheduler.runner import CycleRunner
from harness_pool.scheduler.store import FileStateStore
from harness_pool.testing.fake_backend import FakeClock
from harness_pool.testing.fake_kube import FakeKubeApi
from harness_pool.testing.fake_operator import PLACEHOLDER, FakeOperator

from .helpers import DROP, cycle

SP_DIR = "s3://flink/savepoints"


def deployment(name: str, state: str = "running", job_state: str = "RUNNING",
               life: str = "STABLE", version: str = "v2_0") -> dict:
    return {"apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkDeployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"image": "flink:2.0", "flinkVersion": version,
                     "flinkConfiguration": {"execution.checkpointing.savepoint-dir": SP_DIR},
                     "job": {"jarURI": "local:///opt/job.jar", "parallelism": 1,
                             "state": state, "upgradeMode": "savepoint"}},
            "status": {"lifecycleState": life, "jobStatus": {"state": job_state}}}


MODES = {"resource": dict(snapshot_resources=True),
         "legacy": dict(snapshot_resources=False),
         "v1.9": dict(version="1.9")}


@pytest.fixture(params=list(MODES))
def kube(request):
    with FakeKubeApi(FakeOperator(**MODES[request.param])) as api:
        api.mode = request.param
        api.put_object(deployment("streaming"))
        api.put_object(deployment("bounded-job", "suspended", "FINISHED", "SUSPENDED"))
        yield api


@pytest.fixture
def rkube():
    """Resource mode only (FlinkStateSnapshot)."""
    with FakeKubeApi(FakeOperator()) as api:
        api.mode = "resource"
        api.put_object(deployment("streaming"))
        api.put_object(deployment("bounded-job", "suspended", "FINISHED", "SUSPENDED"))
        yield api


def op_cycle(kube, tmp_path, **over):
    over.setdefault("jobs", {"streaming": {"resource": "streaming"},
                             "bounded": {"resource": "bounded-job"}})
    snapshots = "resource" if kube.mode == "resource" else "legacy"
    if snapshots == "legacy":
        over["savepoints"] = {**over.get("savepoints", {}), "keep": DROP}
    return cycle(tmp_path, backend={"type": "flink-operator", "snapshots": snapshots}, **over)


def runner(kube, tmp_path, **over) -> CycleRunner:
    cfg = op_cycle(kube, tmp_path, **over)
    backend = OperatorBackend(kube.api_client(), cfg.backend)
    return CycleRunner(cfg, backend, FileStateStore(cfg.state.path), clock=FakeClock(),
                       kill_at="")


def run(kube, tmp_path, **over):
    return runner(kube, tmp_path, **over).run_once()


def test_cycle_resumes_from_the_upgrade_savepoint_and_verifies_it(kube, tmp_path):
    state = run(kube, tmp_path)
    assert state.cycles[-1].ok, state.cycles[-1].failure
    taken = state.history[-1].path
    assert taken.startswith(f"{SP_DIR}/streaming/savepoint-")
    assert kube.operator.restored_from == [("bounded-job", None), ("streaming", taken)]
    obj = kube.get_object("flinkdeployments", "streaming")
    assert obj["spec"]["job"]["state"] == "running"
    assert obj["status"]["jobStatus"]["state"] == "RUNNING"
    assert "savepoint-dir" not in str(obj["spec"]["job"]), "never a spec change for the dir"
    if kube.mode == "resource":
        (upgrade,) = kube.list_objects("flinkstatesnapshots")
        assert upgrade["metadata"]["labels"]["snapshot.trigger-type"] == "UPGRADE"
        assert state.history[-1].ref == upgrade["metadata"]["name"]
        assert "savepointInfo" not in obj["status"]["jobStatus"]


def test_bounded_job_starts_with_empty_state_on_every_mode(kube, tmp_path):
    bounded = kube.get_object("flinkdeployments", "bounded-job")
    bounded["status"]["jobStatus"]["upgradeSavepointPath"] = "s3://old/savepoint"
    kube.put_object(bounded)
    state = run(kube, tmp_path)
    assert state.cycles[-1].ok, state.cycles[-1].failure
    assert ("bounded-job", None) in kube.operator.restored_from
    assert kube.get_object("flinkdeployments", "bounded-job")["spec"]["job"][
        "upgradeMode"] == "stateless"


def test_last_state_fallback_is_refused_and_the_job_asked_to_run_again(kube, tmp_path):
    kube.operator.fallback_last_state.add("streaming")
    state = run(kube, tmp_path)
    failure = state.cycles[-1].failure
    assert "without a savepoint of this suspend" in failure and "not safe" in failure
    assert not state.history
    assert ("bounded-job", None) not in kube.operator.restored_from, "bounded must not start"
    assert kube.get_object("flinkdeployments", "streaming")["spec"]["job"]["state"] == "running"


def test_last_state_placeholder_is_never_taken_for_a_savepoint(rkube, tmp_path):
    rkube.operator.last_state_deploy.add("streaming")
    rkube.operator.fallback_last_state.add("streaming")
    streaming = rkube.get_object("flinkdeployments", "streaming")
    streaming["status"]["lifecycleState"] = "SUSPENDED"  # the operator redeploys it, last-state
    rkube.put_object(streaming)
    cfg = op_cycle(rkube, tmp_path)
    OperatorBackend(rkube.api_client(), cfg.backend).find_running(cfg.jobs["streaming"])
    assert rkube.get_object("flinkdeployments", "streaming")["status"]["jobStatus"][
        "upgradeSavepointPath"] == PLACEHOLDER
    state = run(rkube, tmp_path)
    assert f"upgradeSavepointPath is {PLACEHOLDER}" in state.cycles[-1].failure
    assert not state.history


def test_periodic_savepoint_after_a_1_9_suspend_is_refused(tmp_path):
    with FakeKubeApi(FakeOperator(version="1.9")) as kube:
        kube.mode = "v1.9"
        kube.operator.periodic_after_suspend.add("streaming")
        kube.put_object(deployment("streaming"))
        kube.put_object(deployment("bounded-job", "suspended", "FINISHED", "SUSPENDED"))
        state = run(kube, tmp_path)
        assert "trigger type PERIODIC, not UPGRADE" in state.cycles[-1].failure
        assert not state.history


def test_failing_upgrade_savepoint_leaves_the_job_running(kube, tmp_path):
    kube.operator.savepoint_fails.add("streaming")
    state = run(kube, tmp_path)
    assert "Savepoint failed" in state.cycles[-1].failure
    obj = kube.get_object("flinkdeployments", "streaming")
    assert obj["spec"]["job"]["state"] == "running"
    assert obj["status"]["jobStatus"]["state"] == "RUNNING"


def test_never_finishing_bounded_job_is_cancelled_and_streaming_resumed(kube, tmp_path):
    kube.operator.never_finishes.add("bounded-job")
    state = run(kube, tmp_path)
    assert "bounded: still RUNNING after 30 s" in state.cycles[-1].failure
    assert kube.operator.restored_from[-1] == ("streaming", state.history[-1].path)
    assert kube.get_object("flinkdeployments", "bounded-job")["spec"]["job"]["state"] == \
        "suspended"


def test_savepoints_dir_differing_from_the_resource_is_refused_before_the_stop(kube, tmp_path):
    state = run(kube, tmp_path, savepoints={"dir": "s3://elsewhere", "retries": 0,
                                            "timeout": "60s"})
    assert "execution.checkpointing.savepoint-dir=s3://flink/savepoints" in \
        state.cycles[-1].failure
    assert kube.get_object("flinkdeployments", "streaming")["spec"]["job"]["state"] == "running"


def test_missing_resource_is_a_clear_error(rkube, tmp_path):
    cfg = op_cycle(rkube, tmp_path)
    backend = OperatorBackend(rkube.api_client(), cfg.backend)
    job = cfg.jobs["streaming"].__class__(name="x", flink_name="x", resource="nope")
    with pytest.raises(PermanentError, match="read FlinkDeployment nope in namespace default"):
        backend.find_running(job)


def test_bounded_job_as_a_flink_session_job(rkube, tmp_path):
    session_job = deployment("bounded-session", "suspended", "FINISHED", "SUSPENDED")
    session_job["kind"] = "FlinkSessionJob"
    session_job["spec"] = {"deploymentName": "session-cluster",
                           "job": {"jarURI": "https://example/job.jar", "parallelism": 1,
                                   "state": "suspended", "upgradeMode": "stateless"}}
    rkube.put_object(session_job)
    state = run(rkube, tmp_path, jobs={
        "streaming": {"resource": "streaming"},
        "bounded": {"resource": "bounded-session", "kind": "FlinkSessionJob"}})
    assert state.cycles[-1].ok, state.cycles[-1].failure
    assert rkube.get_object("flinksessionjobs", "bounded-session")["status"]["jobStatus"][
        "state"] == "FINISHED"


def test_kubernetes_errors_are_retried_not_fatal(rkube, tmp_path):
    rkube.fail_next = [500, 429, 503]
    state = run(rkube, tmp_path)
    assert state.cycles[-1].ok, state.cycles[-1].failure


# -- savepoint steps ---------------------------------------------------------------------

SAVEPOINT_STEP = [{"action": "savepoint", "job": "streaming", "timeout": "60s"}]


def test_savepoint_step_is_recorded_and_the_job_keeps_running(kube, tmp_path):
    state = run(kube, tmp_path, steps=SAVEPOINT_STEP)
    assert state.cycles[-1].ok, state.cycles[-1].failure
    (record,) = state.history
    assert record.path.startswith(f"{SP_DIR}/streaming/savepoint-")
    obj = kube.get_object("flinkdeployments", "streaming")
    assert obj["spec"]["job"]["state"] == "running"  # a savepoint step never stops the job
    if kube.mode == "resource":
        (snap,) = kube.list_objects("flinkstatesnapshots")
        assert snap["metadata"]["name"] == record.ref
        assert snap["spec"]["jobReference"] == {"kind": "FlinkDeployment", "name": "streaming"}
        assert snap["spec"]["savepoint"]["disposeOnDelete"] is True
        assert "savepointTriggerNonce" not in obj["spec"]["job"]
    else:
        assert obj["spec"]["job"]["savepointTriggerNonce"] > 0


def test_savepoint_step_goes_to_the_snapshot_spec_directory(rkube, tmp_path):
    state = run(rkube, tmp_path, steps=SAVEPOINT_STEP,
                savepoints={"dir": "s3://other", "timeout": "60s"})
    assert state.history[-1].path.startswith("s3://other/")
    assert rkube.list_objects("flinkstatesnapshots")[0]["spec"]["savepoint"]["path"] == \
        "s3://other"
    conf = rkube.get_object("flinkdeployments", "streaming")["spec"]["flinkConfiguration"]
    assert conf == {"execution.checkpointing.savepoint-dir": SP_DIR}, "no redeploying change"


def test_savepoint_step_asked_twice_creates_one_snapshot(rkube, tmp_path):
    cfg = op_cycle(rkube, tmp_path, steps=SAVEPOINT_STEP)
    backend = OperatorBackend(rkube.api_client(), cfg.backend)
    job = cfg.jobs["streaming"]
    backend.trigger_savepoint(job, "streaming", "c1" * 16, "")
    backend.trigger_savepoint(job, "streaming", "c1" * 16, "")  # a restarted scheduler
    assert [s["metadata"]["name"] for s in rkube.list_objects("flinkstatesnapshots")] == \
        [snapshot_name("streaming", "c1" * 16)]
    states = [backend.savepoint_status(job, "streaming", "c1" * 16, False).state.value
              for _ in range(3)]
    assert states[-1] == "COMPLETED" and rkube.operator.savepoints_taken == 1


def test_failed_savepoint_step_reports_the_operator_error_never_hangs(kube, tmp_path):
    kube.operator.savepoint_fails.add("streaming")
    state = run(kube, tmp_path, steps=SAVEPOINT_STEP)
    failure = state.cycles[-1].failure
    if kube.mode == "resource":
        assert "FAILED: java.util.concurrent.CompletionException" in failure
    else:
        assert "the operator gave up on savepoint nonce" in failure
    assert "job left RUNNING" in failure
    assert not state.history
    assert kube.get_object("flinkdeployments", "streaming")["status"]["jobStatus"][
        "state"] == "RUNNING"


def test_abandoned_snapshot_fails_the_step_with_the_reason(rkube, tmp_path):
    streaming = rkube.get_object("flinkdeployments", "streaming")
    streaming["status"]["jobStatus"]["state"] = "RESTARTING"
    rkube.put_object(streaming)
    cfg = op_cycle(rkube, tmp_path)
    backend = OperatorBackend(rkube.api_client(), cfg.backend)
    backend.trigger_savepoint(cfg.jobs["streaming"], "streaming", "ab" * 16, "")
    result = backend.savepoint_status(cfg.jobs["streaming"], "streaming", "ab" * 16, False)
    assert result.state.value == "FAILED"
    assert "ABANDONED: Secondary resource streaming (FlinkDeployment)" in result.error
    assert "is not running" in result.error


def test_missing_snapshot_crd_says_to_use_legacy_mode(tmp_path):
    with FakeKubeApi(FakeOperator(), snapshot_crd=False) as kube:
        kube.mode = "resource"
        kube.put_object(deployment("streaming"))
        state = run(kube, tmp_path, steps=SAVEPOINT_STEP)
        assert "set backend.snapshots: legacy" in state.cycles[-1].failure


# -- retention ---------------------------------------------------------------------------


def test_retention_deletes_snapshot_resources_beyond_keep(rkube, tmp_path):
    r = runner(rkube, tmp_path, savepoints={"keep": 1, "timeout": "60s"},
               steps=SAVEPOINT_STEP)
    first = r.run_once().history[-1]
    state = r.run_once()
    assert [h.path for h in state.history] != [first.path] and len(state.history) == 1
    names = [s["metadata"]["name"] for s in rkube.list_objects("flinkstatesnapshots")]
    assert first.ref not in names and state.history[-1].ref in names
    assert rkube.operator.disposed == [first.path], "disposeOnDelete: data disposed too"


def test_retention_of_upgrade_snapshots_waits_for_the_running_job(rkube, tmp_path):
    rkube.operator.dispose_on_delete = True
    r = runner(rkube, tmp_path, savepoints={"keep": 1, "timeout": "60s"})
    first = r.run_once().history[-1]
    second = r.run_once()
    assert [h.path for h in second.history] == [second.history[-1].path]
    assert first.path in rkube.operator.disposed


def test_legacy_mode_refuses_retention_and_free_slots_at_load():
    from harness_pool._errors import ConfigError

    with pytest.raises(ConfigError) as info:
        cycle(backend={"type": "flink-operator", "snapshots": "legacy"},
              jobs={"streaming": {"resource": "s"}, "bounded": {"resource": "b"}},
              savepoints={"keep": 3},
              steps=[{"action": "rescale", "job": "streaming", "parallelism": "free-slots"}])
    text = str(info.value)
    assert "savepoints.keep: got 3; expected nothing: flink-operator (snapshots: legacy) " \
        "cannot dispose of savepoints" in text
    assert "steps[0].parallelism: got 'free-slots'; expected a number" in text


# -- restart mid-step --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["resource", "legacy"])
def test_crash_at_every_point_then_restart_completes_exactly_once(tmp_path, mode):
    """SIGKILL-like stops at every effect boundary (before it, and after it ran but before
    its result was saved); a fresh scheduler finishes the cycle: one suspend savepoint,
    the bounded job started once, streaming resumed once from that savepoint."""
    from .test_runner import Crash, CrashingRunner

    def world():
        kube = FakeKubeApi(FakeOperator(**MODES[mode])).start()
        kube.mode = mode
        kube.put_object(deployment("streaming"))
        kube.put_object(deployment("bounded-job", "suspended", "FINISHED", "SUSPENDED"))
        return kube

    def crashing(kube, where, point):
        cfg = op_cycle(kube, where)
        r = CrashingRunner(cfg, OperatorBackend(kube.api_client(), cfg.backend),
                           FileStateStore(cfg.state.path), clock=FakeClock(), kill_at=point)
        r.seen = []
        return r

    probe_kube = world()
    try:
        probe = crashing(probe_kube, tmp_path / "probe", "")
        probe.run_once()
        points = sorted(set(probe.seen), key=probe.seen.index)
    finally:
        probe_kube.stop()
    assert "after-stop@running:0" in points and "after-submit@running:3" in points
    if mode == "legacy":  # the in-doubt half: the effect ran, its result was not saved
        points = [p for p in points if p.startswith("after-")]
    for i, point in enumerate(points):
        kube = world()
        try:
            with pytest.raises(Crash):
                crashing(kube, tmp_path / str(i), point).run_once()
            state = runner(kube, tmp_path / str(i)).run_once()
            assert state.cycles[-1].ok, (point, state.cycles[-1].failure)
            assert kube.operator.savepoints_taken == 1, f"{point}: a second savepoint"
            taken = state.history[-1].path
            assert kube.operator.restored_from == [("bounded-job", None), ("streaming", taken)], \
                (point, kube.operator.restored_from)
        finally:
            kube.stop()
