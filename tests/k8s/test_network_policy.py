"""Who may connect to a TaskManager pod's harness-pool ports, by the NetworkPolicies in k8s/.

No network plugin runs here, so ``admits`` evaluates the policies the way the
NetworkPolicy API (networking.k8s.io/v1, Kubernetes 1.30 docs) defines them:
a pod selected by any Ingress policy accepts a connection only if some rule of
such a policy admits the peer (a ``from`` entry: podSelector in the policy's
namespace, namespaceSelector, or both ANDed; no ``from``: everyone) on the port
(a ``ports`` entry: number, named container port, or ``port``..``endPort``; no
``ports``: every port). Traffic from the pod's own node (the kubelet's probes)
is always admitted, whatever the policies say. The schema itself is checked in
test_manifests.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.k8s.manifests import (
    NATIVE_TEMPLATE,
    SIDECAR,
    container,
    find,
    kustomize_build,
    load_all,
    pod_specs,
    port_named,
)

OBJECTS = kustomize_build()
POLICIES = [o for o in OBJECTS if o["kind"] == "NetworkPolicy"]
NAMESPACE = "flink"
PROMETHEUS = ({"kubernetes.io/metadata.name": "monitoring"},
              {"app.kubernetes.io/name": "prometheus"})
(TEMPLATE,) = load_all(NATIVE_TEMPLATE)
TM_LABELS = {**TEMPLATE["metadata"]["labels"], "component": "taskmanager"}
SIDE = container(TEMPLATE["spec"], SIDECAR)
HEALTH, METRICS = port_named(SIDE, "pool-health"), port_named(SIDE, "pool-metrics")


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"extend the evaluator for {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _peer_ok(peer: dict[str, Any], policy_ns: str, ns_labels: dict[str, str],
             pod_labels: dict[str, str]) -> bool:
    assert set(peer) <= {"podSelector", "namespaceSelector"}, f"extend for {peer}"
    if "namespaceSelector" in peer:
        ns_ok = _matches(peer["namespaceSelector"], ns_labels)
    else:
        ns_ok = ns_labels.get("kubernetes.io/metadata.name") == policy_ns
    return ns_ok and _matches(peer.get("podSelector", {}), pod_labels)


def _port_ok(entry: dict[str, Any], port: int, named: dict[str, int]) -> bool:
    assert entry.get("protocol", "TCP") == "TCP"
    want = entry["port"]
    if isinstance(want, str):
        return named.get(want) == port
    return want <= port <= entry.get("endPort", want)


def admits(target_labels: dict[str, str], named: dict[str, int], port: int,
           peer_ns: str | None, peer_labels: dict[str, str]) -> bool:
    """Would a connection to ``port`` of a pod labelled ``target_labels`` be admitted?

    ``peer_ns`` None: the connection comes from the pod's own node (the kubelet).
    """
    if peer_ns is None:
        return True
    ns_labels = {"kubernetes.io/metadata.name": peer_ns}
    selecting = [p for p in POLICIES if "Ingress" in p["spec"]["policyTypes"]
                 and p["metadata"]["namespace"] == NAMESPACE
                 and _matches(p["spec"]["podSelector"], target_labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            ports = rule.get("ports")
            if peers is not None and not any(_peer_ok(p, NAMESPACE, ns_labels, peer_labels)
                                             for p in peers):
                continue
            if ports is not None and not any(_port_ok(e, port, named) for e in ports):
                continue
            return True
    return False


TM_NAMED = {"pool-health": HEALTH, "pool-metrics": METRICS}
JOBMANAGER = (NAMESPACE, {"component": "jobmanager", "app": "streaming-count"})
OTHER_TM = (NAMESPACE, {"component": "taskmanager", "app": "streaming-count"})
STRANGER = ("default", {"app": "anything"})
PROM = ("monitoring", {"app.kubernetes.io/name": "prometheus"})
OTHER_MONITORING = ("monitoring", {"app.kubernetes.io/name": "grafana"})
KUBELET = (None, {})

CASES = [
    ("kubelet probes health", KUBELET, HEALTH, True),
    ("prometheus scrapes metrics", PROM, METRICS, True),
    ("prometheus scrapes flink's reporter", PROM, 9249, True),
    ("prometheus may not probe health", PROM, HEALTH, False),
    ("grafana in monitoring may not scrape", OTHER_MONITORING, METRICS, False),
    ("a stranger may not scrape", STRANGER, METRICS, False),
    ("a stranger may not probe", STRANGER, HEALTH, False),
    ("the jobmanager may not probe", JOBMANAGER, HEALTH, False),
    ("another taskmanager may not scrape", OTHER_TM, METRICS, False),
    ("nobody outside reaches the pool port", OTHER_TM, 50000, False),
    ("the jobmanager reaches flink rpc", JOBMANAGER, 6122, True),
    ("taskmanagers exchange data (random port)", OTHER_TM, 38451, True),
    ("a stranger may not reach flink rpc", STRANGER, 6122, False),
]


@pytest.mark.parametrize(("who", "port", "expected"), [(c[1], c[2], c[3]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_taskmanager_ingress(who: tuple[str | None, dict[str, str]], port: int,
                             expected: bool) -> None:
    assert admits(TM_LABELS, TM_NAMED, port, *who) is expected


def test_every_taskmanager_template_is_selected() -> None:
    (tm_policy,) = [p for p in POLICIES if p["metadata"]["name"] == "harness-pool-taskmanager"]
    for where, spec in pod_specs():
        labels = (TEMPLATE["metadata"]["labels"] if "flink-native" in where
                  else {"harness-pool/sidecar": "enabled"})
        assert _matches(tm_policy["spec"]["podSelector"], labels), where
        side = container(spec, SIDECAR)
        # the ports the policy leaves out are the ports each template's sidecar uses
        assert (port_named(side, "pool-health"), port_named(side, "pool-metrics")) == \
            (HEALTH, METRICS), where


def test_scheduler_ingress() -> None:
    dep = find(OBJECTS, "Deployment", "harness-pool-scheduler")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    metrics = named["metrics"]
    assert admits(labels, named, metrics, *PROM)
    assert admits(labels, named, metrics, *KUBELET)
    assert not admits(labels, named, metrics, *STRANGER)
    assert not admits(labels, named, metrics, *JOBMANAGER)


def test_evaluator_admits_everything_without_a_policy() -> None:
    assert admits({"app": "unselected"}, {}, HEALTH, *STRANGER)
