"""An in-process fake of Ververica Platform's Application Manager REST API (v1, self-managed 2.x).

Followed: the platform documentation (docs.ververica.com, "Savepoints",
"Deployment Upgrades", "Jobs", "API Tokens", versions 2.x), paths under
``/api/v1/namespaces/{ns}``:

- ``GET``/``PATCH /deployments/{name}`` (JSON merge patch of ``spec.state``:
  RUNNING, SUSPENDED, CANCELLED; ``spec.restoreStrategy``, ``spec.upgradeStrategy``,
  ``metadata.annotations``). ``status.state`` moves toward ``spec.state`` one
  step per read (TRANSITIONING first), like the platform's asynchronous
  reconciliation.
- ``GET /savepoints?deploymentId=``, ``POST /savepoints`` (a user request:
  origin USER_REQUEST), ``GET``/``DELETE /savepoints/{id}``. ``metadata.createdAt``
  is an RFC 3339 date-time string. Deletion is asynchronous: DELETE marks the
  savepoint PENDING_DELETION, the next reads show DELETING, then it is gone
  (``deletion_fails``: FAILED_DELETION with ``status.failure``; a new DELETE
  retries it).
- ``GET /jobs?deploymentId=``: one Job resource per start, whose
  ``spec.savepointLocation`` is the savepoint it restored from.

Suspending a deployment takes a savepoint (origin SUSPEND); starting with
``restoreStrategy`` LATEST_SAVEPOINT restores the newest COMPLETED savepoint
*except* those of origin RETAINED_CHECKPOINT (LATEST_STATE would take those
too); NONE starts empty. ``retain_checkpoint(name)`` adds a RETAINED_CHECKPOINT
savepoint, as the platform does when a job with retained checkpoints is
cancelled. ``token``: every request must carry ``Authorization: Bearer <token>``
(401 otherwise). Failure switches: ``savepoint_fails`` (the suspend savepoint
FAILS and the deployment keeps RUNNING), ``never_finishes`` (a bounded
deployment never reaches FINISHED). ``restored_from`` logs each start.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any

from harness_pool.testing._http import HttpFake, JsonHandler, merge_patch

_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<kind>deployments|savepoints|jobs)"
                   r"(?:/(?P<name>[^/]+))?/?$")
_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass
class VervericaSwitches:
    savepoint_fails: set[str] = field(default_factory=set)
    never_finishes: set[str] = field(default_factory=set)
    deletion_fails: set[str] = field(default_factory=set)
    """Savepoint ids (or locations) whose deletion fails."""
    finish_after_reads: int = 3


class FakeVerverica(HttpFake):
    def __init__(self, switches: VervericaSwitches | None = None, token: str = "") -> None:
        self.switches = switches or VervericaSwitches()
        self.token = token
        self.deployments: dict[str, dict[str, Any]] = {}
        self.savepoints: list[dict[str, Any]] = []
        self.jobs: list[dict[str, Any]] = []
        self.restored_from: list[tuple[str, str | None]] = []
        self.unauthorized = 0
        self.lock = threading.Lock()
        self._clock = 0
        super().__init__(self._handler(), "fake-ververica")

    def add_deployment(self, name: str, state: str = "RUNNING",
                       namespace: str = "default") -> dict[str, Any]:
        dep = {
            "kind": "Deployment", "apiVersion": "v1",
            "metadata": {"name": name, "id": str(uuid.uuid4()), "namespace": namespace,
                         "annotations": {}},
            "spec": {"state": state, "upgradeStrategy": {"kind": "STATELESS"},
                     "restoreStrategy": {"kind": "LATEST_SAVEPOINT"},
                     "template": {"spec": {"parallelism": 1}}},
            "status": {"state": state, "running": {"jobId": uuid.uuid4().hex}},
        }
        self.deployments[name] = dep
        return dep

    def retain_checkpoint(self, name: str) -> dict[str, Any]:
        """A retained checkpoint the platform registered (newer than any savepoint)."""
        dep = self.deployments[name]
        return self._add_savepoint(dep, "RETAINED_CHECKPOINT", "COMPLETED",
                                   f"s3://cp/{name}/chk-{self._clock + 1}")

    def live(self, location: str) -> list[dict[str, Any]]:
        return [s for s in self.savepoints if s["spec"]["savepointLocation"] == location]

    # -- platform behaviour ---------------------------------------------------------

    def _now(self) -> str:
        self._clock += 1
        return (_EPOCH + timedelta(seconds=self._clock)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _add_savepoint(self, dep: dict[str, Any], origin: str, state: str, location: str,
                       annotations: dict[str, str] | None = None,
                       failure: str = "") -> dict[str, Any]:
        sp: dict[str, Any] = {"kind": "Savepoint",
              "metadata": {"id": str(uuid.uuid4()), "deploymentId": dep["metadata"]["id"],
                           "origin": origin, "createdAt": self._now(),
                           "annotations": dict(annotations or {})},
              "spec": {"savepointLocation": location}, "status": {"state": state}}
        if failure:
            sp["status"]["failure"] = {"message": failure}
        self.savepoints.append(sp)
        return sp

    def _step(self, dep: dict[str, Any]) -> None:
        name = dep["metadata"]["name"]
        want, have = dep["spec"]["state"], dep["status"]["state"]
        if dep.get("_failed_for") == want:
            return  # the transition failed; the platform waits for a new desired state
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
            return
        if want == "SUSPENDED":
            self._suspend(dep, name)
        elif want == "RUNNING":
            self._start(dep, name)
        else:
            dep["status"]["state"] = want

    def _start(self, dep: dict[str, Any], name: str) -> None:
        restore = None
        kind = dep["spec"].get("restoreStrategy", {}).get("kind")
        if kind in ("LATEST_SAVEPOINT", "LATEST_STATE"):
            done = [s for s in self.savepoints if s["metadata"]["deploymentId"] ==
                    dep["metadata"]["id"] and s["status"]["state"] == "COMPLETED"
                    and (kind == "LATEST_STATE"
                         or s["metadata"]["origin"] != "RETAINED_CHECKPOINT")]
            done.sort(key=lambda s: s["metadata"]["createdAt"])
            restore = done[-1]["spec"]["savepointLocation"] if done else None
        self.restored_from.append((name, restore))
        flink_id = uuid.uuid4().hex
        self.jobs.append({"kind": "Job",
                          "metadata": {"id": str(uuid.uuid4()), "createdAt": self._now(),
                                       "deploymentId": dep["metadata"]["id"]},
                          "spec": {"savepointLocation": restore,
                                   "deploymentName": name},
                          "status": {"state": "STARTED", "started": {"flinkJobId": flink_id}}})
        dep["status"] = {"state": "RUNNING", "running": {"jobId": flink_id},
                         "_startedNonce": dep.get("_nonce", 0)}
        dep["_reads"] = 0

    def _suspend(self, dep: dict[str, Any], name: str) -> None:
        failed = name in self.switches.savepoint_fails
        self._add_savepoint(dep, "SUSPEND", "FAILED" if failed else "COMPLETED",
                            "" if failed else f"s3://sp/{name}/savepoint-{self._clock + 1:04d}",
                            failure="Savepoint failed: checkpoint declined" if failed else "")
        dep["status"]["state"] = "RUNNING" if failed else "SUSPENDED"
        if failed:
            dep["_failed_for"] = "SUSPENDED"

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
        sp = self._add_savepoint(dep, "USER_REQUEST", "STARTED", "", meta.get("annotations"))
        sp["_deployment"] = dep["metadata"]["name"]
        return 201, _public(sp)

    def _advance_savepoints(self) -> None:
        for sp in list(self.savepoints):
            state = sp["status"]["state"]
            if state == "STARTED":
                name = sp.pop("_deployment", "")
                if name in self.switches.savepoint_fails:
                    sp["status"] = {"state": "FAILED",
                                    "failure": {"message": "Savepoint failed: checkpoint "
                                                "declined"}}
                else:
                    sp["spec"]["savepointLocation"] = \
                        f"s3://sp/{name}/savepoint-{self._clock:04d}"
                    sp["status"] = {"state": "COMPLETED"}
            elif state == "PENDING_DELETION":
                if sp["metadata"]["id"] in self.switches.deletion_fails or \
                        sp["spec"]["savepointLocation"] in self.switches.deletion_fails:
                    sp["status"] = {"state": "FAILED_DELETION",
                                    "failure": {"message": "Access Denied (s3:DeleteObject)"}}
                else:
                    sp["status"] = {"state": "DELETING"}
            elif state == "DELETING":
                self.savepoints.remove(sp)

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
                if fake.token and self.headers.get("Authorization") != f"Bearer {fake.token}":
                    fake.unauthorized += 1
                    self.reply(401, {"message": "Unauthorized: missing or invalid API token"})
                    return
                with fake.lock:
                    code, out = fake._serve(method, match["kind"], match["name"], query, body)
                self.reply(code, out)

        return Handler

    def _serve(self, method: str, kind: str, name: str | None, query: str,
               body: dict[str, Any]) -> tuple[int, Any]:
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if kind == "jobs" and method == "GET":
            items = [j for j in self.jobs
                     if params.get("deploymentId") in (None, j["metadata"]["deploymentId"])]
            return 200, {"kind": "JobList", "items": items}
        if kind == "savepoints":
            return self._serve_savepoints(method, name, params, body)
        dep = self.deployments.get(name or "")
        if dep is None:
            return 404, {"message": f"deployment {name} not found"}
        if method == "GET":
            self._step(dep)
            return 200, _public(dep)
        if method == "PATCH":
            state = body.get("spec", {}).get("state")
            if state and state not in ("RUNNING", "SUSPENDED", "CANCELLED"):
                return 400, {"message": f"spec.state {state!r} is not one of RUNNING, "
                             "SUSPENDED, CANCELLED"}
            merge_patch(dep, body)
            if state:
                dep.pop("_failed_for", None)
            if state == "RUNNING" and dep["status"]["state"] != "RUNNING":
                dep["_nonce"] = dep.get("_nonce", 0) + 1
            return 200, _public(dep)
        return 405, {"message": f"{method} not allowed"}

    def _serve_savepoints(self, method: str, name: str | None, params: dict[str, str],
                          body: dict[str, Any]) -> tuple[int, Any]:
        if method == "POST":
            return self._create_savepoint(body)
        self._advance_savepoints()
        if method == "GET" and name is None:
            items = [_public(s) for s in self.savepoints
                     if params.get("deploymentId") in (None, s["metadata"]["deploymentId"])]
            return 200, {"kind": "SavepointList", "items": items}
        sp = next((s for s in self.savepoints if s["metadata"]["id"] == name), None)
        if sp is None:
            return 404, {"message": f"savepoint {name} not found"}
        if method == "GET":
            return 200, _public(sp)
        if method == "DELETE":
            if sp["status"]["state"] in ("COMPLETED", "FAILED", "FAILED_DELETION"):
                sp["status"] = {"state": "PENDING_DELETION"}
            return 200, _public(sp)
        return 405, {"message": f"{method} not allowed"}


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}
