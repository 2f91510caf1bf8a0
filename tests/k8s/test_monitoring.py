"""Monitoring that is exercised: the PrometheusRule, the Grafana dashboard, a real Prometheus.

- ``k8s/monitoring/prometheusrule.yaml``'s groups, as a plain rules file, pass
  ``promtool check rules`` and the unit tests in ``tests/k8s/promtool/rules_test.yaml``
  (``promtool test rules``; Debian's ``prometheus`` package).
- ``k8s/monitoring/grafana-dashboard.json``: structure (unique ids, a grid that fits,
  every query on the ``$datasource`` variable, the namespace/pod variables), and every
  expression parses (promtool).
- A real Prometheus scrapes a running ``harness-pool serve`` and ``harness-pool
  scheduler run`` (idle: no schedule), labelled as the PodMonitor and ServiceMonitor
  label them, and evaluates the rules: all load and evaluate; the busy fraction and
  the HPA's query (read from k8s/autoscaling/prometheus-adapter-values.yaml, the
  adapter's template filled in as the adapter does) give the value the sidecar's
  own status implies while a stage is held; the HPA's real query, the Python CPU
  per slot, is ~0 while the pool is idle and, under a CPU-busy stage, above 0 and
  equal to what the scraped samples of the sidecar's own counters give (which
  match the sidecar's own /metrics); a StartWorker error fires
  HarnessPoolStartWorkerErrors; every dashboard query evaluates, and the pool's
  panels have data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
import yaml
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc

from harness_pool.scheduler.metrics import SchedulerMetrics
from harness_pool.sidecar.cli import fetch_status
from harness_pool.sidecar.metrics import SidecarMetrics
from tests.k8s.helpers import SERVING, free_port, probe, scrape, wait_for
from tests.k8s.manifests import ADAPTER_VALUES, K8S, ROOT, find, kustomize_build
from tests.sidecar.beam_helpers import BackgroundJob

RULE = K8S / "monitoring" / "prometheusrule.yaml"
DASHBOARD = K8S / "monitoring" / "grafana-dashboard.json"
PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool" / "rules_test.yaml"
LABELS = {"namespace": "flink", "pod": "tm-1"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make system-deps` (Debian's prometheus "
                    "package) as root; `make test` does")
    return path


def rule_groups() -> dict[str, Any]:
    (rule,) = yaml.safe_load_all(RULE.read_text())
    return {"groups": rule["spec"]["groups"]}


def exported_names() -> set[str]:
    names = set()
    for registry in (SidecarMetrics().registry, SchedulerMetrics().registry):
        for family in registry.collect():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
            names.add(family.name)
            names.update(family.name + s for s in suffixes.get(family.type, []))
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(harness_pool_[a-z_]+)\b", expr))


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(f"{p['title']} {t['refId']}", t["expr"]) for p in dash["panels"]
            for t in p.get("targets", [])]


def concrete(expr: str) -> str:
    """A dashboard expression with Grafana's variables as the dashboard's 'All' gives them."""
    return (expr.replace("$__rate_interval", "1m").replace("$namespace", ".*")
            .replace("$pod", ".*"))


def promtool_check(tmp_path: Path, groups: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(groups))
    return subprocess.run([_tool("promtool"), "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)


# -- rules -----------------------------------------------------------------------------


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    out = promtool_check(tmp_path, rule_groups())
    assert out.returncode == 0, out.stdout + out.stderr
    n = sum(len(g["rules"]) for g in rule_groups()["groups"])
    assert f"SUCCESS: {n} rules found" in out.stdout


def test_promtool_check_catches_a_broken_expression(tmp_path: Path) -> None:
    groups = rule_groups()
    groups["groups"][0]["rules"][0]["expr"] = "sum by (pod (harness_pool_pool_size)"
    assert promtool_check(tmp_path, groups).returncode != 0


def test_rules_unit_tests(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rule_groups()))
    shutil.copy(PROMTOOL_TESTS, tmp_path / "rules_test.yaml")
    out = subprocess.run([_tool("promtool"), "test", "rules", "rules_test.yaml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    alerts = {r["alert"] for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r}
    tested = set(re.findall(r"alertname: (\w+)", PROMTOOL_TESTS.read_text()))
    assert alerts == tested, f"alerts without a unit test: {sorted(alerts - tested)}"


def test_rules_name_the_alerts_operators_need_and_real_metrics() -> None:
    rules = [r for g in rule_groups()["groups"] for r in g["rules"]]
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert {"HarnessPoolExhausted", "HarnessPoolStartWorkerErrors",
            "HarnessPoolWorkersCrashLooping", "HarnessPoolSchedulerHeartbeatStale",
            "HarnessPoolSchedulerCycleFailed", "HarnessPoolSavepointTooOld"} <= alerts
    known = exported_names()
    for rule in rules:
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {sorted(unknown)}"
        assert rule.get("alert") is None or rule["annotations"]["summary"], rule


def test_rule_is_applied_with_the_monitors() -> None:
    objects = kustomize_build()
    rule = find(objects, "PrometheusRule", "harness-pool")
    pod_monitor = find(objects, "PodMonitor", "harness-pool-sidecar")
    # the same Prometheus selects both (kube-prometheus-stack selects release=...)
    assert rule["metadata"]["labels"]["release"] == pod_monitor["metadata"]["labels"]["release"]


# -- dashboard -------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "pod"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            expr = target["expr"]
            if "harness_pool_" in expr and "scheduler" not in expr:
                # pool panels follow the namespace and pod pickers
                assert 'namespace=~"$namespace"' in expr and 'pod=~"$pod"' in expr, expr
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    assert "pool" in titles and "scheduler" in titles and "flink" in titles


def test_dashboard_expressions_parse_and_name_real_metrics(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    groups = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": concrete(e)} for i, (_, e) in enumerate(exprs)
    ]}]}
    out = promtool_check(tmp_path, groups)
    assert out.returncode == 0, out.stdout + out.stderr
    known = exported_names()
    for where, expr in exprs:
        assert metric_names(expr) <= known, f"{where}: {sorted(metric_names(expr) - known)}"
    flink = {m for _, e in exprs for m in re.findall(r"\b(flink_taskmanager_\w+)", e)}
    assert flink, "no panel joins Flink's own TaskManager metrics"
    for _, expr in exprs:
        if "flink_taskmanager_" in expr:  # Flink's tm_id (the pod name) becomes `pod`
            assert '"pod", "$1", "tm_id"' in expr, expr


def test_dashboard_is_shipped_as_a_grafana_configmap() -> None:
    cm = find(kustomize_build(), "ConfigMap", "harness-pool-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["grafana-dashboard.json"]) == json.loads(DASHBOARD.read_text())


# -- a real Prometheus ------------------------------------------------------------------


def _scrape_job(name: str, port: int, labels: dict[str, str], honor: bool,
                path: str) -> dict[str, Any]:
    return {"job_name": name, "honor_labels": honor, "metrics_path": path,
            "scrape_interval": "1s",
            "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": labels}]}


class Prom:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        resp = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        body = resp.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return list(body["data"]["result"])

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def scalar_at(self, expr: str, at: float) -> float | None:
        result = self.query(expr, at=at)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def get(self, path: str) -> Any:
        return requests.get(f"{self.url}{path}", timeout=10).json()["data"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A sidecar, an idle scheduler and a Prometheus scraping both, as processes."""
    tmp = tmp_path_factory.mktemp("prometheus")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    port, metrics, sched_port, prom_port = free_port(), free_port(), free_port(), free_port()
    cycle = tmp / "cycle.yaml"
    cycle.write_text(yaml.safe_dump({  # no schedule: the loop beats and waits
        "backend": {"type": "flink-rest", "url": f"http://127.0.0.1:{free_port()}"},
        "state": {"path": str(tmp / "state.json")},
        "jobs": {"s": {"python": "s.py"}}, "steps": [{"action": "savepoint", "job": "s"}]}))
    objects = kustomize_build()
    pod_ep = find(objects, "PodMonitor", "harness-pool-sidecar")["spec"]["podMetricsEndpoints"][0]
    svc_ep = find(objects, "ServiceMonitor", "harness-pool-scheduler")["spec"]["endpoints"][0]
    (tmp / "rules.yml").write_text(yaml.safe_dump(rule_groups()))
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / "rules.yml")],
        "scrape_configs": [
            _scrape_job("sidecar", metrics, LABELS, pod_ep.get("honorLabels", False),
                        pod_ep["path"]),
            _scrape_job("scheduler", sched_port, {"namespace": "flink", "pod": "scheduler-0"},
                        svc_ep.get("honorLabels", False), svc_ep["path"]),
        ]}))
    procs: list[subprocess.Popen[bytes]] = []
    outputs = []

    def start(name: str, cmd: list[str]) -> None:
        out = open(tmp / f"{name}.log", "wb")
        outputs.append(out)
        procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                      cwd=tmp))

    try:
        start("sidecar", [sys.executable, "-m", "harness_pool", "serve", "--port", str(port),
                          "--workers", "2", "--metrics-port", str(metrics)])
        start("scheduler", [sys.executable, "-m", "harness_pool", "scheduler", "run",
                            "--config", str(cycle), "--metrics-port", str(sched_port)])
        start("prometheus", [_tool("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"])
        prom = Prom(f"http://127.0.0.1:{prom_port}")

        def targets_up() -> bool:
            try:
                active = prom.get("/api/v1/targets")["activeTargets"]
            except (requests.RequestException, ValueError, KeyError):
                return False
            return len(active) == 2 and all(t["health"] == "up" for t in active)

        address = f"127.0.0.1:{port}"
        wait_for(lambda: probe(address, "") == SERVING, 120, "the sidecar warm")
        wait_for(targets_up, 120, "Prometheus scraping the sidecar and the scheduler",
                 poll=0.5)
        yield {"prom": prom, "address": address, "tmp": tmp, "metrics": metrics}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for out in outputs:
            out.close()


def _eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last})")


def _adapter_query(name: str) -> tuple[str, str]:
    """(metric ``name`` as the HPA asks for it, PromQL the adapter sends for pod tm-1)."""
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    (rule,) = [r for r in rules if r["name"]["as"] == name] or [None]
    assert rule is not None, f"no prometheus-adapter rule serves {name}"
    matchers = ",".join(f'{k}="{v}"' for k, v in LABELS.items())
    query = rule["metricsQuery"].replace("<<.LabelMatchers>>", matchers) \
                                .replace("<<.GroupBy>>", "pod")
    assert "<<" not in query, f"adapter template not filled in: {query}"
    return rule["name"]["as"], query


def _expected_from_status(name: str, address: str) -> float:
    """What the HPA metric ``name`` must be, from the sidecar's own status."""
    status = fetch_status(address)
    if name == "harness_pool_busy_fraction":
        busy = sum(w.state in ("assigned", "busy") for w in status.workers if w.kind != "external")
        return busy / max(status.target_idle, 1)
    raise AssertionError(f"no expectation for the HPA metric {name}: add one here")


@pytest.mark.slow
def test_rules_load_and_evaluate_on_live_series(live: dict[str, Any]) -> None:
    prom: Prom = live["prom"]

    def all_ok() -> bool:
        groups = prom.get("/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == sum(len(g["rules"]) for g in rule_groups()["groups"]) and all(
            r["health"] == "ok" and r.get("lastEvaluation", "").startswith("20") for r in rules)

    _eventually(all_ok, 60, "every rule loaded and evaluated without error")
    _eventually(lambda: prom.scalar(f'harness_pool:busy_fraction{{pod="{LABELS["pod"]}"}}')
                == 0.0, 60, "the busy fraction recorded (idle pool: 0)")
    age = prom.scalar("time() - harness_pool_scheduler_heartbeat_timestamp_seconds")
    assert age is not None and age < 120, "the scheduler's heartbeat is live"
    firing = {a["labels"]["alertname"] for a in prom.get("/api/v1/alerts")["alerts"]}
    assert not firing & {"HarnessPoolSchedulerHeartbeatStale", "HarnessPoolExhausted"}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_hpa_query_and_busy_fraction_follow_a_held_stage(live: dict[str, Any]) -> None:
    prom: Prom = live["prom"]
    name, query = _adapter_query("harness_pool_busy_fraction")
    folder = live["tmp"] / "gate"
    folder.mkdir()
    job = BackgroundJob(live["address"], str(folder))
    try:
        job.wait_started()
        expected = _expected_from_status(name, live["address"])
        assert expected > 0, "a held stage keeps a worker busy"
        _eventually(lambda: prom.scalar(query) == pytest.approx(expected), 60,
                    f"the HPA query {query!r} = {expected}")
        recorded = f'harness_pool:busy_fraction{{pod="{LABELS["pod"]}"}}'
        _eventually(lambda: prom.scalar(recorded) == pytest.approx(expected), 60,
                    f"the recording rule = {expected}")  # evaluated on its own interval
    finally:
        job.release()
        job.join()
    _eventually(lambda: prom.scalar(query) == 0.0, 60, "the HPA query back to 0")


@pytest.mark.slow
def test_a_start_worker_error_fires_its_alert(live: dict[str, Any]) -> None:
    prom: Prom = live["prom"]
    with grpc.insecure_channel(live["address"]) as channel:
        resp = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel).StartWorker(
            beam_fn_api_pb2.StartWorkerRequest(worker_id=""), timeout=10)
    assert resp.error, "an empty worker id is refused"

    def fired() -> list[dict[str, Any]]:
        return [a for a in prom.get("/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == "HarnessPoolStartWorkerErrors"
                and a["state"] == "firing"]

    (alert,) = _eventually(fired, 60, "HarnessPoolStartWorkerErrors firing")
    assert alert["labels"]["reason"] == "bad_request"
    assert alert["labels"]["pod"] == LABELS["pod"]
    assert "StartWorker errors (bad_request)" in alert["annotations"]["summary"]


@pytest.mark.slow
def test_every_dashboard_query_evaluates_and_pool_panels_have_data(live: dict[str, Any]
                                                                    ) -> None:
    prom: Prom = live["prom"]
    always = {"harness_pool_workers", "harness_pool_pool_size",
              "harness_pool_scheduler_heartbeat_timestamp_seconds"}  # gauges set at start
    with_data = 0
    for where, expr in dashboard_exprs():
        result = prom.query(concrete(expr))  # every query evaluates (status success)
        names = metric_names(expr)
        if names and names <= always and "flink_" not in expr:
            assert result, f"{where}: no data from the live sidecar for {concrete(expr)}"
            with_data += 1
    assert with_data >= 3


CPU = "harness_pool_worker_cpu_seconds_total"
#: Python CPU per slot (cores) that counts as idle: an idle stage costs its worker a
#: few tenths of a CPU second, which over the adapter's 2 m window is about 0.001.
IDLE_CPU_PER_SLOT = 0.02


def _cpu_per_slot_from_samples(prom: Prom, window: str, at: float) -> float:
    """The Python CPU per slot over ``window`` ending at ``at``, from the raw samples
    Prometheus scraped of the sidecar's own counters: per slot, last minus first sample
    over the window's length, summed, over the pool size."""
    pod = LABELS["pod"]
    seconds = float(window.rstrip("m")) * 60
    increase = 0.0
    for series in prom.query(f'{CPU}{{pod="{pod}"}}[{window}]', at=at):
        values = [float(v) for _, v in series["values"]]
        increase += values[-1] - values[0]
    size = prom.scalar(f'harness_pool_pool_size{{pod="{pod}"}}')
    assert size, "the pool size is scraped"
    return increase / seconds / size


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_hpa_python_cpu_per_slot_is_idle_then_follows_a_busy_stage(live: dict[str, Any]
                                                                    ) -> None:
    prom: Prom = live["prom"]
    name, query = _adapter_query("harness_pool_python_cpu_per_slot")
    window = re.search(r"\[(\d+m)\]", query)
    assert window, query
    # -- idle: the series exist from the start (every slot at 0), the query answers ~0
    idle = _eventually(lambda: prom.scalar(query) is not None and [prom.scalar(query)], 60,
                       f"the HPA query {query!r} answering")[0]
    assert idle <= IDLE_CPU_PER_SLOT, f"{name} is {idle} with no stage running"
    # -- busy: a stage whose UDF spins
    folder = live["tmp"] / "burn"
    folder.mkdir()
    job = BackgroundJob(live["address"], str(folder), burn=True)
    try:
        job.wait_started()
        busy = _eventually(lambda: (prom.scalar(query) or 0.0) > 5 * IDLE_CPU_PER_SLOT
                           and [prom.scalar(query)], 90, f"{name} rising under a busy UDF")[0]
        at = time.time() - 1.0  # a moment whose scrape has landed
        hpa = prom.scalar_at(query, at)
        from_samples = _cpu_per_slot_from_samples(prom, window.group(1), at)
        own = sum(v for (n, _), v in scrape(live["metrics"]).items() if n == CPU)
        scraped = prom.scalar_at(f'sum({CPU}{{pod="{LABELS["pod"]}"}})', at)
    finally:
        job.release()
        job.join()
    print(f"\n{name}: idle {idle:.4f}, under a busy UDF {busy:.3f} (cores per slot)")
    assert hpa is not None and hpa > 0
    # rate() extrapolates to the window's edges by at most about one scrape interval (1 s).
    assert hpa == pytest.approx(from_samples, rel=0.1), (hpa, from_samples)
    # What Prometheus scraped is what the sidecar itself reports (it only grows since).
    assert scraped is not None and scraped <= own + 1e-6
    assert own - scraped < 10.0, f"scraped {scraped} CPU s, the sidecar now reports {own}"
