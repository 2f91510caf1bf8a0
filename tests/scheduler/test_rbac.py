"""The scheduler's Role grants exactly the Kubernetes calls it makes, no fewer, no more.

The example cycle of ``k8s/scheduler`` runs against the fake API server, seeded with the
example FlinkDeployments of ``k8s/operator`` and the state ConfigMap of
``k8s/scheduler/state.yaml``: a manual savepoint through ``savepoints trigger``, two
cycles with retention, and a Lease that was deleted. Every request the fake served is
matched against the Role's rules, and every rule's verb must have been used.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from harness_pool import cli
from harness_pool.testing.fake_kube import FakeKubeApi
from harness_pool.testing.fake_operator import FakeOperator

K8S = Path(__file__).resolve().parents[2] / "k8s"
VERBS = {("GET", True): "get", ("GET", False): "list", ("POST", False): "create",
         ("PUT", True): "update", ("PATCH", True): "patch", ("DELETE", True): "delete"}
_PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/[^/]+/"
                   r"(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?/?$")


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    return next(d for d in docs if d["kind"] == kind
                and (name is None or d["metadata"]["name"] == name))




def test_role_grants_exactly_the_calls_the_scheduler_makes(tmp_path, monkeypatch,
                                                          restore_logging, capsys):
    role = _find(_docs(K8S / "scheduler" / "rbac.yaml"), "Role")
    cycle_doc = yaml.safe_load(_find(_docs(K8S / "scheduler" / "cycle-configmap.yaml"),
                                     "ConfigMap")["data"]["cycle.yaml"])
    ns = cycle_doc["backend"]["namespace"]
    cycle_doc.update(schedule={}, polling={"interval": "1ms", "max_interval": "5ms"})
    cycle_doc["savepoints"].update(keep=1)
    cycle_doc["steps"][2]["timeout"] = "1h"
    path = tmp_path / "cycle.yaml"
    path.write_text(yaml.safe_dump(cycle_doc))
    with FakeKubeApi(FakeOperator()) as kube:
        for doc in _docs(K8S / "scheduler" / "state.yaml"):
            if doc["kind"] == "ConfigMap":  # the Lease is left out: the scheduler creates it
                kube.put_object({**doc, "metadata": {**doc["metadata"], "namespace": ns}})
        for name, job_state, life in (("streaming-count", "RUNNING", "STABLE"),
                                      ("bounded-words", "FINISHED", "SUSPENDED")):
            obj = _find(_docs(K8S / "operator" / f"{name}.yaml"), "FlinkDeployment")
            obj["metadata"]["namespace"] = ns
            obj["status"] = {"lifecycleState": life, "jobStatus": {"state": job_state}}
            kube.put_object(obj)
        monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
        assert cli.main(["savepoints", "trigger", "--config", str(path), "--job",
                         "streaming"]) == 0
        kube.delete_object("leases", cycle_doc["state"]["lease"], ns)
        for _ in range(2):
            assert cli.main(["scheduler", "once", "--config", str(path)]) == 0, \
                capsys.readouterr().out
        used = set()
        for method, url in kube.requests:
            match = _PATH.match(url)
            assert match, url
            used.add((match["group"] or "", match["plural"],
                      VERBS[(method, bool(match["name"]))], match["name"]))
    granted = [(g, r, v, tuple(rule.get("resourceNames") or ())) for rule in role["rules"]
               for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]]
    for group, plural, verb, name in sorted(used, key=str):
        assert any(g == group and r == plural and v == verb and (not names or name in names)
                   for g, r, v, names in granted), \
            f"the scheduler calls {verb} {group}/{plural} {name or ''}, the Role does not allow it"
    for group, plural, verb, _ in granted:
        assert any(u[:3] == (group, plural, verb) for u in used), \
            f"the Role grants {verb} on {group}/{plural}, the scheduler never calls it"
