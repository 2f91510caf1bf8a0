"""Operator backend, ConfigMap store and Lease election with the real ``kubernetes`` client
against the in-process fake API server (harness_pool.testing.fake_kube). No real cluster
can run here; the fake follows the documented REST paths and operator status fields.
"""

from __future__ import annotations

import json
import logging

import pytest
from kubernetes import client

from harness_pool import cli
from harness_pool._errors import PermanentError
from harness_pool.scheduler.backends.operator import OperatorBackend
from harness_pool.scheduler.leader import LeaseElector
from harness_pool.scheduler.model import CycleState
from harness_pool.scheduler.runner import CycleRunner
from harness_pool.scheduler.store import ConfigMapStateStore, FileStateStore
from harness_pool.testing.fake_backend import FakeClock
from harness_pool.testing.fake_kube import FakeKubeApi, FakeOperator

from .helpers import cycle


def deployment(name: str, state: str = "running", job_state: str = "RUNNING",
               life: str = "STABLE") -> dict:
    return {"apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkDeployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"image": "flink:2.0", "flinkVersion": "v2_0",
                     "job": {"jarURI": "local:///opt/job.jar", "parallelism": 1,
                             "state": state, "upgradeMode": "savepoint"}},
            "status": {"lifecycleState": life, "jobStatus": {"state": job_state}}}


@pytest.fixture
def restore_logging():
    """``cli.main`` configures the root logger; give pytest its handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def kube():
    with FakeKubeApi(FakeOperator()) as api:
        api.put_object(deployment("streaming"))
        api.put_object(deployment("bounded-job", "suspended", "FINISHED", "SUSPENDED"))
        yield api


def op_cycle(tmp_path, **over):
    over.setdefault("jobs", {"streaming": {"resource": "streaming"},
                             "bounded": {"resource": "bounded-job"}})
    return cycle(tmp_path, backend={"type": "flink-operator", "url": ""}, **over)


def run(kube, tmp_path, **over):
    cfg = op_cycle(tmp_path, **over)
    backend = OperatorBackend(kube.api_client(), "default")
    return CycleRunner(cfg, backend, FileStateStore(cfg.state.path), clock=FakeClock(),
                       kill_at="").run_once()


def test_operator_cycle_resumes_from_the_upgrade_savepoint(kube, tmp_path):
    state = run(kube, tmp_path)
    assert state.cycles[-1].ok, state.cycles[-1].failure
    taken = state.history[-1].path
    assert taken == "file:/savepoints/streaming/savepoint-0001"
    assert kube.operator.restored_from == [("bounded-job", None), ("streaming", taken)]
    obj = kube.get_object("flinkdeployments", "streaming")
    assert obj["spec"]["job"]["state"] == "running"
    assert obj["status"]["jobStatus"]["state"] == "RUNNING"
    assert kube.get_object("flinkdeployments", "bounded-job")["status"]["jobStatus"][
        "state"] == "FINISHED"


def test_last_state_fallback_is_not_counted_as_a_safe_cycle(kube, tmp_path):
    kube.operator.fallback_last_state.add("streaming")
    state = run(kube, tmp_path)
    failure = state.cycles[-1].failure
    assert "without a new savepoint (last-state fallback)" in failure
    assert "job left RUNNING" in failure
    assert not state.history
    assert ("bounded-job", None) not in kube.operator.restored_from, "bounded must not start"
    assert kube.get_object("flinkdeployments", "streaming")["spec"]["job"]["state"] == "running"


def test_failing_savepoint_leaves_the_job_running(kube, tmp_path):
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


def test_missing_resource_is_a_clear_error(kube, tmp_path):
    cfg = op_cycle(tmp_path)
    backend = OperatorBackend(kube.api_client(), "default")
    with pytest.raises(PermanentError, match="read FlinkDeployment nope in namespace default: "
                                             "not found"):
        backend.find_running(cfg.jobs["streaming"].__class__(
            name="x", flink_name="x", resource="nope"))


def test_configmap_store_round_trip_and_conflict(kube):
    api = client.CoreV1Api(kube.api_client())
    store = ConfigMapStateStore(api, "default", "cycle-state")
    assert store.load() is None
    store.save(CycleState(cycle_id="c1"))
    store.save(CycleState(cycle_id="c2"))
    assert ConfigMapStateStore(api, "default", "cycle-state").load().cycle_id == "c2"
    stale = ConfigMapStateStore(api, "default", "cycle-state")
    stale.load()
    store.save(CycleState(cycle_id="c3"))
    with pytest.raises(PermanentError, match="conflict"):
        stale.save(CycleState(cycle_id="lost"))
    assert ConfigMapStateStore(api, "default", "cycle-state").load().cycle_id == "c3"


def test_only_the_lease_holder_leads_until_the_lease_expires(kube):
    api = client.CoordinationV1Api(kube.api_client())
    a = LeaseElector(api, "default", "scheduler", "a", duration=15)
    b = LeaseElector(api, "default", "scheduler", "b", duration=15)
    assert a.is_leader(1000.0)
    assert not b.is_leader(1005.0)
    assert a.is_leader(1010.0)  # renews
    assert not b.is_leader(1020.0)
    assert b.is_leader(1030.0)  # a stopped renewing at 1010: expired at 1025
    assert not a.is_leader(1031.0)


def test_cli_once_with_operator_configmap_and_lease(kube, tmp_path, monkeypatch, capsys,
                                                    restore_logging):
    import yaml

    monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    path = tmp_path / "cycle.yaml"
    path.write_text(yaml.safe_dump({
        "name": "op",
        "backend": {"type": "flink-operator", "namespace": "default"},
        "state": {"type": "configmap", "configmap": "op-cycle", "lease": "op-scheduler"},
        "polling": {"interval": "1ms", "max_interval": "5ms"},
        "jobs": {"streaming": {"resource": "streaming"}, "bounded": {"resource": "bounded-job"}},
        "steps": [{"action": "suspend", "job": "streaming"},
                  {"action": "start", "job": "bounded"},
                  {"action": "wait", "job": "bounded", "timeout": "30s"},
                  {"action": "resume", "job": "streaming"}],
    }))
    assert cli.main(["scheduler", "once", "--config", str(path)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"]
    assert "op-cycle" in json.dumps(kube.get_object("configmaps", "op-cycle")["metadata"])
    assert kube.get_object("leases", "op-scheduler")["spec"]["holderIdentity"]
    assert cli.main(["scheduler", "status", "--config", str(path)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "IDLE" and status["savepoints"]


def test_bounded_job_as_a_flink_session_job(kube, tmp_path):
    session_job = deployment("bounded-session", "suspended", "FINISHED", "SUSPENDED")
    session_job["kind"] = "FlinkSessionJob"
    session_job["spec"] = {"deploymentName": "session-cluster",
                           "job": {"jarURI": "https://example/job.jar", "parallelism": 1,
                                   "state": "suspended", "upgradeMode": "stateless"}}
    kube.put_object(session_job)
    state = run(kube, tmp_path, jobs={
        "streaming": {"resource": "streaming"},
        "bounded": {"resource": "bounded-session", "kind": "FlinkSessionJob"}})
    assert state.cycles[-1].ok, state.cycles[-1].failure
    assert kube.get_object("flinksessionjobs", "bounded-session")["status"]["jobStatus"][
        "state"] == "FINISHED"


SAVEPOINT_STEP = [{"action": "savepoint", "job": "streaming", "timeout": "60s"}]


def test_savepoint_step_uses_the_trigger_nonce_and_is_recorded(kube, tmp_path):
    state = run(kube, tmp_path, steps=SAVEPOINT_STEP)
    assert state.cycles[-1].ok, state.cycles[-1].failure
    assert [(r.job, r.path) for r in state.history] == [
        ("streaming", "file:/savepoints/streaming/savepoint-0001")]
    obj = kube.get_object("flinkdeployments", "streaming")
    assert obj["spec"]["job"]["savepointTriggerNonce"] > 0
    assert obj["spec"]["job"]["state"] == "running"  # a savepoint step never stops the job
    assert obj["status"]["jobStatus"]["savepointInfo"]["lastSavepoint"]["triggerType"] == "MANUAL"


def test_savepoint_step_asked_twice_triggers_once(kube, tmp_path):
    cfg = op_cycle(tmp_path, steps=SAVEPOINT_STEP)
    backend = OperatorBackend(kube.api_client(), "default")
    job = cfg.jobs["streaming"]
    backend.trigger_savepoint(job, "streaming", "cycle-1/sp", "")
    first = kube.get_object("flinkdeployments", "streaming")["spec"]["job"]
    backend.trigger_savepoint(job, "streaming", "cycle-1/sp", "")  # a restarted scheduler
    again = kube.get_object("flinkdeployments", "streaming")["spec"]["job"]
    assert first["savepointTriggerNonce"] == again["savepointTriggerNonce"]
    states = [backend.savepoint_status(job, "streaming", "cycle-1/sp").status for _ in range(3)]
    assert states[-1] == "COMPLETED" and kube.operator.savepoints_taken == 1


def test_failing_savepoint_step_is_reported_and_the_job_keeps_running(kube, tmp_path):
    kube.operator.savepoint_fails.add("streaming")
    state = run(kube, tmp_path, steps=SAVEPOINT_STEP)
    assert "Savepoint failed" in state.cycles[-1].failure
    assert not state.history
    obj = kube.get_object("flinkdeployments", "streaming")
    assert obj["spec"]["job"]["state"] == "running"
    assert obj["status"]["jobStatus"]["state"] == "RUNNING"


class _Racing:
    """A CoordinationV1Api whose reads let a rival act between read and write."""

    def __init__(self, api, rival) -> None:
        self.api, self.rival = api, rival

    def read_namespaced_lease(self, *args, **kwargs):
        try:
            return self.api.read_namespaced_lease(*args, **kwargs)
        finally:
            self.rival()  # the rival writes after our read, before our write

    def __getattr__(self, name):
        return getattr(self.api, name)


@pytest.mark.parametrize("first", ["create", "takeover"])
def test_two_replicas_racing_for_the_lease_never_both_lead(kube, first):
    api = client.CoordinationV1Api(kube.api_client())
    a = LeaseElector(api, "default", "scheduler", "a", duration=15)
    if first == "takeover":
        assert LeaseElector(api, "default", "scheduler", "old", duration=15).is_leader(0.0)
    now = 1000.0  # any lease taken at 0.0 has expired by now
    results = {}
    b = LeaseElector(_Racing(api, lambda: results.setdefault("a", a.is_leader(now))),
                     "default", "scheduler", "b", duration=15)
    results["b"] = b.is_leader(now)
    assert results == {"a": True, "b": False}, "the replica that wrote second must not lead"
    assert api.read_namespaced_lease("scheduler", "default").spec.holder_identity == "a"
