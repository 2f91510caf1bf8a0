"""An in-process fake of the Ververica Platform REST API (application manager, v1).

Paths, as documented for ``/api/v1/namespaces/{ns}``:

- ``GET /deployments/{name}``, ``PATCH /deployments/{name}`` (JSON merge patch
  of ``spec.state``: RUNNING, SUSPENDED, CANCELLED; ``spec.restoreStrategy``;
  ``metadata.annotations``);
- ``GET /savepoints?deploymentId=...``, ``DELETE /savepoints/{id}``.

A deployment's ``status.state`` moves toward ``spec.state`` one step per read
(TRANSITIONING first), like the platform's asynchronous reconciliation.
Suspending a STATEFUL deployment takes a savepoint (origin SUSPEND); starting
with restoreStrategy LATEST_SAVEPOINT restores the newest COMPLETED one
(``restored_from`` logs it). Failure switches: ``savepoint_fails`` (the
suspend savepoint FAILS and the deployment keeps RUNNING), ``never_finishes``
(a bounded deployment never reaches FINISHED).
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from harness_pool.testing._http import HttpFake, JsonHandler, merge_patch

_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<kind>deployments|savepoints)"
                   r"(?:/(?P<name>[^/]+))?/?$")


@dataclass
class VervericaSwitches:
    savepoint_fails: set[str] = field(default_factory=set)
    never_finishes: set[str] = field(default_factory=set)
    finish_after_reads: int = 3


class FakeVerverica(HttpFake):
    def __init__(self, switches: VervericaSwitches | None = None) -> None:
        self.switches = switches or VervericaSwitches()
        self.deployments: dict[str, dict[str, Any]] = {}
        self.savepoints: list[dict[str, Any]] = []
        self.restored_from: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self._clock = 0
        super().__init__(self._handler(), "fake-ververica")

    def add_deployment(self, name: str, state: str = "RUNNING",
                       namespace: str = "default") -> dict[str, Any]:
        dep = {
            "kind": "Deployment", "apiVersion": "v1",
            "metadata": {"name": name, "id": str(uuid.uuid4()), "namespace": namespace,
                         "annotations": {}},
            "spec": {"state": state, "upgradeStrategy": {"kind": "STATEFUL"},
                     "restoreStrategy": {"kind": "LATEST_SAVEPOINT"},
                     "template": {"spec": {"parallelism": 1}}},
            "status": {"state": state, "running": {"jobId": uuid.uuid4().hex}},
        }
        self.deployments[name] = dep
        return dep

    # -- platform behaviour ---------------------------------------------------------

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _step(self, dep: dict[str, Any]) -> None:
        name = dep["metadata"]["name"]
        want, have = dep["spec"]["state"], dep["status"]["state"]
        if want == have or (want == "RUNNING" and have == "FINISHED"
                            and dep["status"].get("_startedNonce") == dep.get("_nonce", 0)):
            if have == "RUNNING" and name.startswith("bounded") \
                    and name not in self.switches.never_finishes:
                dep["_reads"] = dep.get("_reads", 0) + 1
                if dep["_reads"] >= self.switches.finish_after_reads:
                    dep["status"]["state"] = "FINISHED"
            return
        if have != "TRANSITIONING":
            dep["status"]["state"] = "TRANSITIONING"
            dep["_from"] = have
            return
        if want == "SUSPENDED":
            self._suspend(dep, name)
        elif want == "RUNNING":
            restore = None
            if dep["spec"].get("restoreStrategy", {}).get("kind") == "LATEST_SAVEPOINT":
                done = [s for s in self.savepoints if s["metadata"]["deploymentId"] ==
                        dep["metadata"]["id"] and s["status"]["state"] == "COMPLETED"]
                restore = done[-1]["spec"]["savepointLocation"] if done else None
            self.restored_from.append((name, restore))
            dep["status"] = {"state": "RUNNING", "running": {"jobId": uuid.uuid4().hex},
                             "_startedNonce": dep.get("_nonce", 0)}
            dep["_reads"] = 0
        else:
            dep["status"]["state"] = want

    def _suspend(self, dep: dict[str, Any], name: str) -> None:
        failed = name in self.switches.savepoint_fails
        n = self._tick()
        self.savepoints.append({
            "kind": "Savepoint",
            "metadata": {"id": str(uuid.uuid4()), "deploymentId": dep["metadata"]["id"],
                         "origin": "SUSPEND", "createdAt": n},
            "spec": {"savepointLocation": "" if failed else f"s3://sp/{name}/savepoint-{n:04d}"},
            "status": {"state": "FAILED" if failed else "COMPLETED",
                       **({"failure": {"message": "Savepoint failed: checkpoint declined"}}
                          if failed else {})},
        })
        dep["status"]["state"] = "RUNNING" if failed else "SUSPENDED"

    def _create_savepoint(self, body: dict[str, Any]) -> tuple[int, Any]:
        """A user-requested savepoint of a running deployment: STARTED, completed (or
        failed, with ``savepoint_fails``) on the next list."""
        meta = body.get("metadata") or {}
        dep = next((d for d in self.deployments.values()
                    if d["metadata"]["id"] == meta.get("deploymentId")), None)
        if dep is None:
            return 404, {"message": f"deployment id {meta.get('deploymentId')!r} not found"}
        if dep["status"]["state"] != "RUNNING":
            return 409, {"message": f"deployment {dep['metadata']['name']} is not RUNNING"}
        sp = {"kind": "Savepoint",
              "metadata": {"id": str(uuid.uuid4()), "deploymentId": meta["deploymentId"],
                           "origin": "USER_REQUEST", "createdAt": self._tick(),
                           "annotations": dict(meta.get("annotations") or {})},
              "spec": {"savepointLocation": ""}, "status": {"state": "STARTED"},
              "_deployment": dep["metadata"]["name"]}
        self.savepoints.append(sp)
        return 201, {k: v for k, v in sp.items() if not k.startswith("_")}

    def _complete_savepoints(self) -> None:
        for sp in self.savepoints:
            if sp["status"]["state"] != "STARTED":
                continue
            name = sp.pop("_deployment", "")
            if name in self.switches.savepoint_fails:
                sp["status"] = {"state": "FAILED",
                                "failure": {"message": "Savepoint failed: checkpoint declined"}}
            else:
                sp["spec"]["savepointLocation"] = \
                    f"s3://sp/{name}/savepoint-{sp['metadata']['createdAt']:04d}"
                sp["status"] = {"state": "COMPLETED"}

    # -- HTTP -----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(JsonHandler):
            def route(self, method: str) -> None:
                path, _, query = self.path.partition("?")
                match = _PATH.match(path)
                if not match:
                    self.reply(404, {"message": f"no route {path}"})
                    return
                body = self.body()
                with fake.lock:
                    code, out = fake._serve(method, match["kind"], match["name"], query, body)
                self.reply(code, out)

        return Handler

    def _serve(self, method: str, kind: str, name: str | None, query: str,
               body: dict[str, Any]) -> tuple[int, Any]:
        if kind == "savepoints":
            if method == "POST":
                return self._create_savepoint(body)
            if method == "GET":
                self._complete_savepoints()
                dep_id = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get(
                    "deploymentId")
                items = [s for s in self.savepoints
                         if dep_id is None or s["metadata"]["deploymentId"] == dep_id]
                return 200, {"kind": "SavepointList", "items": items}
            if method == "DELETE":
                before = len(self.savepoints)
                self.savepoints = [s for s in self.savepoints if s["metadata"]["id"] != name]
                return (200, {}) if len(self.savepoints) < before else \
                    (404, {"message": f"savepoint {name} not found"})
        dep = self.deployments.get(name or "")
        if dep is None:
            return 404, {"message": f"deployment {name} not found"}
        if method == "GET":
            self._step(dep)
            return 200, {k: v for k, v in dep.items() if not k.startswith("_")}
        if method == "PATCH":
            state = body.get("spec", {}).get("state")
            if state and state not in ("RUNNING", "SUSPENDED", "CANCELLED"):
                return 400, {"message": f"spec.state {state!r} is not one of RUNNING, "
                             "SUSPENDED, CANCELLED"}
            merge_patch(dep, body)
            if state == "RUNNING" and dep["status"]["state"] != "RUNNING":
                dep["_nonce"] = dep.get("_nonce", 0) + 1
            return 200, {k: v for k, v in dep.items() if not k.startswith("_")}
        return 405, {"message": f"{method} not allowed"}
