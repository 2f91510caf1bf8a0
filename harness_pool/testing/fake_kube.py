"""An in-process fake Kubernetes API server with a simulated Flink Kubernetes Operator.

No API server can run on these machines. This one serves, on 127.0.0.1 and a
free port, the REST paths the official ``kubernetes`` client uses, as the
Kubernetes API reference (v1.30) documents them:

- ``/apis/flink.apache.org/v1beta1/namespaces/{ns}/{flinkdeployments|flinksessionjobs|
  flinkstatesnapshots}[/{name}]`` (the operator's CRDs; ``snapshot_crd=False``
  serves none for snapshots, as on a cluster with an operator older than 1.10)
- ``/api/v1/namespaces/{ns}/configmaps[/{name}]``
- ``/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]``

with GET (list honours ``labelSelector`` equality terms), POST (create; 409
``AlreadyExists``), PUT (replace; 409 ``Conflict`` when
``metadata.resourceVersion`` is stale), PATCH (JSON merge patch), DELETE
(objects with finalizers get a ``deletionTimestamp`` and stay until the
finalizer lets go), and ``Status`` bodies for errors: a missing object's 404
carries ``details`` (name, group, kind), an unknown resource type's does not.
``fail_next`` answers the next requests with the given status codes (a
flaky or overloaded API server).

The operator (``fake_operator.FakeOperator``) advances a custom resource one
step each time it is read.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from harness_pool.testing._http import HttpFake, JsonHandler, merge_patch
from harness_pool.testing.fake_operator import FakeOperator

_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))/namespaces/(?P<ns>[^/]+)/"
    r"(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?/?$"
)
KINDS = {"flinkdeployments": "FlinkDeployment", "flinksessionjobs": "FlinkSessionJob",
         "flinkstatesnapshots": "FlinkStateSnapshot", "configmaps": "ConfigMap",
         "leases": "Lease"}
PLURALS = {v: k for k, v in KINDS.items()}
GROUPS = {"configmaps": "", "leases": "coordination.k8s.io"}


def _selected(obj: dict[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip().lstrip("="):
            return False
    return True


class FakeKubeApi(HttpFake):
    """The server. ``url`` for the client; ``objects`` keyed by (plural, ns, name)."""

    def __init__(self, operator: FakeOperator | None = None, snapshot_crd: bool = True) -> None:
        self.operator = operator or FakeOperator()
        self.snapshot_crd = snapshot_crd
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_next: list[int] = []
        self.lock = threading.Lock()
        self._version = 0
        super().__init__(self._handler(), "fake-kube-api")

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))
        return path

    def api_client(self) -> Any:
        from kubernetes import client

        conf = client.Configuration()
        conf.host = self.url
        conf.retries = 0
        return client.ApiClient(conf)

    def put_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Seed an object directly (as if kubectl-applied)."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        with self.lock:
            self._store(PLURALS[obj["kind"]], meta["namespace"], obj)
        return obj

    def get_object(self, plural: str, name: str, ns: str = "default") -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[(plural, ns, name)])

    def list_objects(self, plural: str, ns: str = "default") -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(o) for (p, n, _), o in sorted(self.objects.items())
                    if p == plural and n == ns]

    def delete_object(self, plural: str, name: str, ns: str = "default") -> None:
        with self.lock:
            self.objects.pop((plural, ns, name), None)

    # -- state -----------------------------------------------------------------------

    def _store(self, plural: str, ns: str, obj: dict[str, Any]) -> None:
        self._version += 1
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = ns
        meta["resourceVersion"] = str(self._version)
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        obj["kind"] = KINDS[plural]
        self.objects[(plural, ns, meta["name"])] = obj

    def _lookup(self, ns: str) -> Any:
        def find(kind: str, name: str) -> dict[str, Any] | None:
            return self.objects.get((PLURALS.get(kind, ""), ns, name))
        return find

    def _step(self, ns: str, obj: dict[str, Any]) -> None:
        if self.operator.step(obj, self._lookup(ns)):
            self._store(PLURALS[obj["kind"]], ns, obj)
        while self.operator.created:
            made = self.operator.created.pop(0)
            self._store(PLURALS[made["kind"]], made["metadata"].get("namespace", ns), made)
            self.operator.step(made, self._lookup(ns))
        for (plural, n, name), other in list(self.objects.items()):
            if plural == "flinkstatesnapshots" and n == ns and \
                    other["metadata"].get("deletionTimestamp") and \
                    self.operator.cleanup(other, self._lookup(ns)):
                del self.objects[(plural, n, name)]

    # -- HTTP -----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(JsonHandler):
            def status(self, code: int, reason: str, message: str,
                       details: dict[str, str] | None = None) -> None:
                body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1",
                                        "status": "Failure", "message": message,
                                        "reason": reason, "code": code}
                if details:
                    body["details"] = details
                self.reply(code, body)

            def route(self, method: str) -> None:
                path, _, query = self.path.partition("?")
                api.requests.append((method, path))
                with api.lock:
                    failing = api.fail_next.pop(0) if api.fail_next else None
                if failing:
                    self.status(failing, "InternalError" if failing >= 500 else "TooManyRequests",
                                f"injected failure {failing}")
                    return
                match = _PATH.match(path)
                if not match or match["plural"] not in KINDS or (
                        match["plural"] == "flinkstatesnapshots" and not api.snapshot_crd):
                    self.status(404, "NotFound", "the server could not find the requested "
                                "resource")
                    return
                with api.lock:
                    api._serve(self, method, match["plural"], match["ns"], match["name"],
                               parse_qs(query))

        return Handler

    def _serve(self, h: Any, method: str, plural: str, ns: str, name: str | None,
               query: dict[str, list[str]]) -> None:
        kind = KINDS[plural]
        if method == "GET" and name is None:
            selector = (query.get("labelSelector") or [""])[0]
            for obj in [o for (p, n, _), o in list(self.objects.items()) if p == plural
                        and n == ns]:
                self._step(ns, obj)
            items = [o for (p, n, _), o in sorted(self.objects.items())
                     if p == plural and n == ns and _selected(o, selector)]
            h.reply(200, {"kind": f"{kind}List", "items": items,
                          "metadata": {"resourceVersion": str(self._version)}})
            return
        if method == "POST":
            body = h.body()
            name = body.get("metadata", {}).get("name", "")
            if (plural, ns, name) in self.objects:
                h.status(409, "AlreadyExists", f'{plural} "{name}" already exists',
                         {"name": name, "kind": plural})
                return
            self._store(plural, ns, body)
            h.reply(201, body)
            return
        key = (plural, ns, name or "")
        if key not in self.objects:
            h.status(404, "NotFound", f'{plural} "{name}" not found',
                     {"name": name or "", "group": GROUPS.get(plural, "flink.apache.org"),
                      "kind": plural})
            return
        current = self.objects[key]
        if method == "GET":
            self._step(ns, current)
            h.reply(200, self.objects.get(key, current))
        elif method == "PUT":
            body = h.body()
            sent = body.get("metadata", {}).get("resourceVersion")
            if sent and sent != current["metadata"]["resourceVersion"]:
                h.status(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": '
                         "the object has been modified; please apply your changes to the "
                         "latest version and try again", {"name": name or "", "kind": plural})
                return
            if "status" in current and kind.startswith("Flink"):
                body["status"] = current["status"]  # status is a subresource
            for keep in ("finalizers", "deletionTimestamp", "creationTimestamp"):
                if keep in current["metadata"]:
                    body.setdefault("metadata", {})[keep] = current["metadata"][keep]
            self._store(plural, ns, body)
            h.reply(200, body)
        elif method == "PATCH":
            merge_patch(current, h.body())
            self._store(plural, ns, current)
            h.reply(200, current)
        elif method == "DELETE":
            self._delete(h, plural, ns, current)

    def _delete(self, h: Any, plural: str, ns: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if plural == "flinkstatesnapshots" and meta.get("finalizers") and \
                not self.operator.cleanup(obj, self._lookup(ns)):
            meta.setdefault("deletionTimestamp",
                            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            self._store(plural, ns, obj)
            h.reply(200, obj)
            return
        del self.objects[(plural, ns, meta["name"])]
        h.reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                      "details": {"name": meta["name"], "kind": plural}})
