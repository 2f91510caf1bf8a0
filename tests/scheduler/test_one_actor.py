"""One actor, whatever the entry point: two ``scheduler run`` replicas with skewed clocks and a
``savepoints trigger`` arriving mid-cycle, against the fake API server (ConfigMap state, Lease,
operator backend). The replicas run in threads of this process so each effect can be checked
against the other replica's view of the Lease at that very moment."""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml
from kubernetes import client

from harness_pool import cli
from harness_pool.scheduler.backends.operator import OperatorBackend
from harness_pool.scheduler.config import load_cycle
from harness_pool.scheduler.leader import LeaseElector
from harness_pool.scheduler.runner import CycleRunner, SystemClock
from harness_pool.scheduler.store import ConfigMapStateStore
from harness_pool.testing.fake_kube import FakeKubeApi
from harness_pool.testing.fake_operator import FakeOperator

from .test_operator_backend import SP_DIR, deployment


@pytest.fixture
def kube(tmp_path, monkeypatch):
    with FakeKubeApi(FakeOperator(finish_after_reads=40)) as api:
        api.put_object(deployment("streaming"))
        api.put_object(deployment("bounded-job", "suspended", "FINISHED", "SUSPENDED"))
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kubeconfig")))
        yield api


def write_cycle(tmp_path, **over) -> str:
    doc = {
        "name": "op",
        "backend": {"type": "flink-operator", "namespace": "default", "submit_grace": "2s"},
        "state": {"type": "configmap", "configmap": "op-cycle", "lease": "op-scheduler",
                  "lease_duration": "3s", "renew_deadline": "2s", "retry_period": "500ms"},
        "savepoints": {"timeout": "10m", "keep": 10},
        "polling": {"interval": "50ms", "max_interval": "100ms"},
        "schedule": {"every": "1h"},
        "jobs": {"streaming": {"resource": "streaming"}, "bounded": {"resource": "bounded-job"}},
        "steps": [{"action": "suspend", "job": "streaming"},
                  {"action": "start", "job": "bounded"},
                  {"action": "wait", "job": "bounded", "timeout": "10m"},
                  {"action": "resume", "job": "streaming", "timeout": "10m"}],
        **over,
    }
    path = tmp_path / "cycle.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


class SkewedClock(SystemClock):
    """A host's clocks: wall time off by ``skew`` (what the Lease record shows), cycle
    time off by ``cycle_skew`` (the run loop's deadlines, which stay wall-clock times in
    the state: a takeover with a clock off by more than a step's timeout would misjudge
    them, see docs/scheduler.md), monotonic time from this host's own origin."""

    def __init__(self, skew: float, cycle_skew: float) -> None:
        super().__init__()
        self.skew, self.cycle_skew = skew, cycle_skew

    def now(self) -> float:
        return time.time() + self.cycle_skew

    def monotonic(self) -> float:
        return time.monotonic() + self.skew

    def wall(self) -> float:
        return time.time() + self.skew


class Replica:
    def __init__(self, kube: FakeKubeApi, cfg_path: str, name: str, skew: float,
                 effects: list[tuple[str, str, bool]]) -> None:
        cfg = load_cycle(cfg_path)
        api = kube.api_client()
        self.clock = SkewedClock(skew, cycle_skew=skew / 600)
        s = cfg.state
        self.lease = LeaseElector(client.CoordinationV1Api(api), "default", s.lease, name,
                                  s.lease_duration, s.renew_deadline, s.retry_period,
                                  clock=self.clock)
        self.runner = CycleRunner(cfg, OperatorBackend(api, cfg.backend),
                                  ConfigMapStateStore(client.CoreV1Api(api), "default",
                                                      s.configmap),
                                  clock=self.clock, actor=self.lease, kill_at="")
        self.name, self.effects, self.other = name, effects, None
        self.error: BaseException | None = None
        run = self.runner.executor.run

        def recorded(effect, plan):
            self.effects.append((self.name, effect.kind.value,
                                 self.other is not None and self.other.lease.leading()))
            time.sleep(0.01)  # a slow backend: cycles span many lease periods
            return run(effect, plan)

        self.runner.executor.run = recorded  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self._run, name=f"replica-{name}")

    def _run(self) -> None:
        try:
            self.runner.run_forever(self.clock.stop)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def stop(self) -> None:
        self.clock.stop.set()
        self.thread.join(timeout=30)


def wait_for(condition, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_skewed_replicas_and_a_manual_trigger_make_one_actor(kube, tmp_path,
                                                                  restore_logging, capsys):
    path = write_cycle(tmp_path)
    effects: list[tuple[str, str, bool]] = []
    a = Replica(kube, path, "replica-a", skew=0.0, effects=effects)
    b = Replica(kube, path, "replica-b", skew=3600.0, effects=effects)  # an hour ahead
    a.other, b.other = b, a
    store = ConfigMapStateStore(client.CoreV1Api(kube.api_client()), "default", "op-cycle")
    a.thread.start()
    wait_for(a.lease.leading, what="replica a to lead")
    b.thread.start()
    wait_for(lambda: (store.load() or None) is not None and store.load().step_index >= 1,
             what="the cycle to reach its second step")
    result: dict[str, int] = {}
    trigger = threading.Thread(target=lambda: result.setdefault("rc", cli.main(
        ["savepoints", "trigger", "--config", path, "--job", "streaming", "--wait", "120"])))
    trigger.start()
    wait_for(lambda: any(k.startswith("request.") for k in
                         kube.get_object("configmaps", "op-cycle")["data"])
             or bool(store.load().requests), what="the request to reach the inbox")
    a.stop()  # a clean stop mid-cycle: the state is saved, the Lease released
    assert a.error is None and not a.thread.is_alive()
    a_done = len(effects)
    wait_for(b.lease.leading, what="replica b to take over")
    trigger.join(timeout=120)
    final = store.load()
    b.stop()
    assert b.error is None and not b.thread.is_alive()

    assert result.get("rc") == 0, "the manual trigger was run by the acting replica"
    assert not [e for e in effects if e[2]], f"an effect ran while the other replica led: {effects}"
    actors = [name for name, _, _ in effects]
    assert "replica-a" in actors[:a_done], "a acted first"
    assert set(actors[a_done:]) == {"replica-b"}, "b finished the cycle and ran the request"
    scheduled = [c for c in final.cycles if c.kind.value == "SCHEDULED"]
    assert scheduled and scheduled[0].ok, scheduled
    (req,) = final.requests
    assert req.status.value == "DONE" and req.result in [h.path for h in final.history]
    assert len(final.history) == 2, "no savepoint record was lost"
    suspend = next(h.path for h in final.history if h.cycle_id == scheduled[0].cycle_id)
    assert [p for n, p in kube.operator.restored_from if n == "streaming"] == [suspend], \
        "resumed once, from the savepoint the cycle took"
    obj = kube.get_object("flinkdeployments", "streaming")
    assert obj["spec"]["job"]["state"] == "running"
    assert obj["status"]["jobStatus"]["state"] == "RUNNING"


def test_manual_requests_without_a_running_scheduler_act_themselves(kube, tmp_path,
                                                                    restore_logging, capsys):
    path = write_cycle(tmp_path, schedule={})
    assert cli.main(["savepoints", "trigger", "--config", path, "--job", "streaming"]) == 0
    taken = capsys.readouterr().out.strip().splitlines()[-1]
    assert taken.startswith(f"{SP_DIR}/streaming/")
    assert cli.main(["savepoints", "trigger", "--config", path, "--job", "nope"]) == 2
    assert "unknown job 'nope'" in capsys.readouterr().out
    assert cli.main(["savepoints", "dispose", "--config", path, "--path", taken]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "disposed"
    assert taken in kube.operator.disposed
    assert cli.main(["scheduler", "status", "--config", path]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in status["requests"]] == ["DONE", "DONE"]
    assert status["savepoints"] == []
    lease = kube.get_object("leases", "op-scheduler")["spec"]
    assert lease["holderIdentity"] == "", "released after the command"


def test_scheduler_once_with_operator_configmap_and_lease(kube, tmp_path, restore_logging,
                                                          capsys):
    path = write_cycle(tmp_path, schedule={})
    assert cli.main(["scheduler", "once", "--config", path]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"]
    assert cli.main(["scheduler", "status", "--config", path]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "IDLE" and status["savepoints"]
