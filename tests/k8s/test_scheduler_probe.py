"""The scheduler's liveness probe: /healthz on its metrics port reflects a stuck loop.

The Deployment's probe (k8s/scheduler/deployment.yaml) asks GET /healthz on the
port ``scheduler run --metrics-port`` serves; this starts that server
(``harness_pool.scheduler.metrics.serve``) and checks it answers 200 while the
loop beats and 503 once the beat is older than the allowed staleness. The
metric names docs/kubernetes.md lists are checked against both registries.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from harness_pool.scheduler.metrics import SchedulerMetrics, serve
from harness_pool.sidecar.metrics import SidecarMetrics
from tests.k8s.helpers import free_port
from tests.k8s.manifests import ROOT, find, kustomize_build


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture
def scheduler_http() -> Iterator[tuple[SchedulerMetrics, int]]:
    metrics = SchedulerMetrics()
    port = free_port()
    server = serve(metrics, port, stale_after=5.0, host="127.0.0.1")
    try:
        yield metrics, port
    finally:
        server.shutdown()
        server.server_close()


def test_healthz_is_503_when_the_loop_is_stuck(scheduler_http: tuple[SchedulerMetrics, int]
                                               ) -> None:
    metrics, port = scheduler_http
    dep = find(kustomize_build(), "Deployment", "harness-pool-scheduler")
    path = dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"]
    url = f"http://127.0.0.1:{port}{path}"
    assert _get(url) == 503, "never beat: not alive"
    metrics.beat()
    assert _get(url) == 200
    metrics.heartbeat.set(time.time() - 10)  # the loop stopped going round 10 s ago
    assert _get(url) == 503
    assert _get(f"http://127.0.0.1:{port}/metrics") == 200


def test_documented_metric_names_exist() -> None:
    names = set()
    for registry in (SidecarMetrics().registry, SchedulerMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            if family.type == "counter":  # exposed as NAME_total (labelled: no samples yet)
                names.add(family.name + "_total")
            names.update(s.name for s in family.samples)
    names.add("harness_pool_busy_fraction")  # computed by prometheus-adapter (autoscaling/)
    doc = (ROOT / "docs" / "kubernetes.md").read_text()
    documented = set(re.findall(r"\b(harness_pool_[a-z_]+)", doc))
    assert documented, "no metric names in docs/kubernetes.md"
    assert documented <= names, f"documented but not exported: {sorted(documented - names)}"
    exported = {f.name for f in SidecarMetrics().registry.collect()}
    missing = {n for n in exported if n not in documented and n + "_total" not in documented}
    assert not missing, f"sidecar metrics missing from docs/kubernetes.md: {sorted(missing)}"
