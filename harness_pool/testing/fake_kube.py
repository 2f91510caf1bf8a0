"""An in-process fake Kubernetes API server with a simulated Flink Kubernetes Operator.

It serves, on 127.0.0.1 and a free port, the REST paths the official
``kubernetes`` client uses:

- ``/apis/flink.apache.org/v1beta1/namespaces/{ns}/{flinkdeployments|flinksessionjobs}[/{name}]``
- ``/api/v1/namespaces/{ns}/configmaps[/{name}]``
- ``/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]``

with GET, POST (create; 409 AlreadyExists), PUT (replace; 409 Conflict when
``metadata.resourceVersion`` is stale), PATCH (JSON merge patch), DELETE, and
``Status`` bodies for errors, as the API server documents them.

The simulated operator advances a custom resource one step each time it is
read (no threads, no sleeps; a test polls, the operator moves), following the
operator's documented behaviour for ``spec.job.state`` with ``upgradeMode:
savepoint``: suspend takes an UPGRADE savepoint, reports it in
``status.jobStatus.upgradeSavepointPath`` and
``status.jobStatus.savepointInfo.lastSavepoint``, sets ``jobStatus.state``
FINISHED and ``lifecycleState`` SUSPENDED; running restores from
``upgradeSavepointPath``. Failure switches (``FakeOperator``):
``fallback_last_state`` (suspend without a savepoint, as the operator does
for an unhealthy job with last-state fallback enabled), ``savepoint_fails``
(error in ``status.error``, job stays RUNNING), ``never_finishes`` (a bounded
job stays RUNNING). A new ``spec.job.savepointTriggerNonce`` on a running job
takes a MANUAL savepoint reported in ``savepointInfo.lastSavepoint`` with that
``triggerNonce`` (or fails with ``savepoint_fails``). ``restored_from`` logs
which savepoint each start used.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from harness_pool.testing._http import HttpFake, JsonHandler, merge_patch

_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))/namespaces/(?P<ns>[^/]+)/"
    r"(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?/?$"
)
KINDS = {"flinkdeployments": "FlinkDeployment", "flinksessionjobs": "FlinkSessionJob",
         "configmaps": "ConfigMap", "leases": "Lease"}


@dataclass
class FakeOperator:
    fallback_last_state: set[str] = field(default_factory=set)
    savepoint_fails: set[str] = field(default_factory=set)
    never_finishes: set[str] = field(default_factory=set)
    finish_after_reads: int = 3
    """A job whose name starts with 'bounded' reaches FINISHED after this many reads."""
    restored_from: list[tuple[str, str | None]] = field(default_factory=list)
    savepoints_taken: int = 0

    def step(self, obj: dict[str, Any]) -> bool:
        """Advance one reconcile step; True when the object changed."""
        if obj.get("kind") not in ("FlinkDeployment", "FlinkSessionJob"):
            return False
        name = obj["metadata"]["name"]
        job = obj.setdefault("spec", {}).setdefault("job", {})
        status = obj.setdefault("status", {})
        js = status.setdefault("jobStatus", {})
        life = status.get("lifecycleState", "CREATED")
        want = job.get("state", "running")
        nonce = obj["spec"].get("restartNonce")
        if want == "suspended" and life != "SUSPENDED":
            return self._suspend(name, job, status, js)
        if want == "running" and (life in ("CREATED", "SUSPENDED")
                                  or nonce != status.get("_observedNonce")):
            status["_observedNonce"] = nonce
            status["lifecycleState"] = "DEPLOYED"
            status.pop("error", None)
            js["state"] = "RECONCILING"
            js["jobId"] = f"{abs(hash((name, nonce, len(self.restored_from)))):032x}"[:32]
            restore = js.get("upgradeSavepointPath") if job.get("upgradeMode") != "stateless" \
                else None
            self.restored_from.append((name, restore))
            status["_reads"] = 0
            return True
        if want == "running" and js.get("state") == "RECONCILING":
            js["state"], status["lifecycleState"] = "RUNNING", "STABLE"
            return True
        manual = job.get("savepointTriggerNonce")
        if want == "running" and js.get("state") == "RUNNING" and manual is not None \
                and manual != status.get("_savepointNonce"):
            return self._manual_savepoint(name, manual, status, js)
        if want == "running" and js.get("state") == "RUNNING" and name.startswith("bounded"):
            status["_reads"] = status.get("_reads", 0) + 1
            if name not in self.never_finishes and status["_reads"] >= self.finish_after_reads:
                js["state"] = "FINISHED"
                return True
        return False

    def _manual_savepoint(self, name: str, nonce: int, status: dict[str, Any],
                          js: dict[str, Any]) -> bool:
        """``spec.job.savepointTriggerNonce`` changed: first read starts the savepoint
        (``savepointInfo.triggerId``), the next completes it (``lastSavepoint`` with the
        nonce) or fails it (``status.error``); the job keeps running either way."""
        info = js.setdefault("savepointInfo", {})
        if not info.get("triggerId"):
            info["triggerId"] = f"{nonce:032x}"[:32]
            info["triggerType"] = "MANUAL"
            return True
        info.pop("triggerId")
        status["_savepointNonce"] = nonce
        if name in self.savepoint_fails:
            status["error"] = ("Savepoint failed: java.io.IOException: "
                               "Cannot create savepoint directory")
            return True
        self.savepoints_taken += 1
        path = f"file:/savepoints/{name}/savepoint-{self.savepoints_taken:04d}"
        info["lastSavepoint"] = {"location": path, "triggerType": "MANUAL",
                                 "formatType": "CANONICAL", "triggerNonce": nonce,
                                 "timeStamp": 1_000 * self.savepoints_taken}
        info.setdefault("savepointHistory", []).append(info["lastSavepoint"])
        return True

    def _suspend(self, name: str, job: dict[str, Any], status: dict[str, Any],
                 js: dict[str, Any]) -> bool:
        mode = job.get("upgradeMode", "stateless")
        if status.get("lifecycleState") != "UPGRADING":
            status["lifecycleState"] = "UPGRADING"  # first read: savepoint in flight
            return True
        if mode == "savepoint" and name in self.savepoint_fails:
            status["error"] = ("Savepoint failed: java.io.IOException: "
                               "Cannot create savepoint directory")
            status["lifecycleState"] = "STABLE"
            return True
        if mode == "savepoint" and name not in self.fallback_last_state \
                and js.get("state") == "RUNNING":
            self.savepoints_taken += 1
            path = f"file:/savepoints/{name}/savepoint-{self.savepoints_taken:04d}"
            js["upgradeSavepointPath"] = path
            info = js.setdefault("savepointInfo", {})
            info["lastSavepoint"] = {"location": path, "triggerType": "UPGRADE",
                                     "formatType": "CANONICAL",
                                     "timeStamp": 1_000 * self.savepoints_taken}
            info.setdefault("savepointHistory", []).append(info["lastSavepoint"])
        js["state"] = "FINISHED"
        status["lifecycleState"] = "SUSPENDED"
        return True


class FakeKubeApi(HttpFake):
    """The server. ``url`` for the client; ``objects`` keyed by (plural, ns, name)."""

    def __init__(self, operator: FakeOperator | None = None) -> None:
        self.operator = operator or FakeOperator()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
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
        return client.ApiClient(conf)

    def put_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Seed an object directly (as if kubectl-applied)."""
        plural = {v: k for k, v in KINDS.items()}[obj["kind"]]
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        with self.lock:
            self._bump(obj)
            self.objects[(plural, meta["namespace"], meta["name"])] = obj
        return obj

    def get_object(self, plural: str, name: str, ns: str = "default") -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[(plural, ns, name)])

    # -- HTTP -----------------------------------------------------------------------

    def _bump(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(JsonHandler):
            def _status(self, code: int, reason: str, message: str) -> None:
                self.reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "message": message, "reason": reason, "code": code})

            def route(self, method: str) -> None:
                path = self.path.split("?", 1)[0]
                api.requests.append((method, path))
                match = _PATH.match(path)
                if not match or match["plural"] not in KINDS:
                    self._status(404, "NotFound", f"the server could not find {path}")
                    return
                plural, ns, name = match["plural"], match["ns"], match["name"]
                with api.lock:
                    api._serve(self, method, plural, ns, name)

        return Handler

    def _serve(self, h: Any, method: str, plural: str, ns: str, name: str | None) -> None:
        key = (plural, ns, name or "")
        kind = KINDS[plural]
        if method == "GET" and name is None:
            items = [o for (p, n, _), o in self.objects.items() if p == plural and n == ns]
            h.reply(200, {"kind": f"{kind}List", "items": items,
                           "metadata": {"resourceVersion": str(self._version)}})
            return
        if method == "POST":
            body = h.body()
            name = body.get("metadata", {}).get("name", "")
            key = (plural, ns, name)
            if key in self.objects:
                h._status(409, "AlreadyExists", f'{plural} "{name}" already exists')
                return
            body.setdefault("metadata", {})["namespace"] = ns
            body["kind"] = kind
            self._bump(body)
            self.objects[key] = body
            h.reply(201, body)
            return
        if key not in self.objects:
            h._status(404, "NotFound", f'{plural} "{name}" not found')
            return
        current = self.objects[key]
        if method == "GET":
            if self.operator.step(current):
                self._bump(current)
            h.reply(200, current)
        elif method == "PUT":
            body = h.body()
            sent = body.get("metadata", {}).get("resourceVersion")
            if sent and sent != current["metadata"]["resourceVersion"]:
                h._status(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": '
                          "the object has been modified; please apply your changes to the "
                          "latest version and try again")
                return
            if "status" in current and kind.startswith("Flink"):
                body["status"] = current["status"]  # status is a subresource
            body["kind"] = kind
            self._bump(body)
            self.objects[key] = body
            h.reply(200, body)
        elif method == "PATCH":
            merge_patch(current, h.body())
            self._bump(current)
            h.reply(200, current)
        elif method == "DELETE":
            del self.objects[key]
            h.reply(200, {"kind": "Status", "status": "Success"})
