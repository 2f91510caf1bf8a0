"""Ververica Platform backend (Application Manager REST API v1, self-managed 2.x).

A job is a Deployment (``job.resource``); requests are ``PATCH
/api/v1/namespaces/{ns}/deployments/{name}`` of ``spec.state`` (RUNNING,
SUSPENDED, CANCELLED), verified by polling ``status.state``. Savepoints come
from ``GET /savepoints?deploymentId=``, sorted by ``metadata.createdAt`` (an
RFC 3339 date-time). A suspend counts only when a new COMPLETED savepoint of
origin SUSPEND appears; the suspend PATCH sets ``upgradeStrategy`` STATEFUL
and records the previous one in an annotation, and the next PATCH that lets
the deployment run again puts it back. A savepoint step is a ``POST
/savepoints`` for the deployment carrying the trigger id as an annotation
(asked once: a restarted scheduler finds its own). Resuming uses
``restoreStrategy: LATEST_SAVEPOINT``, which the platform documents as "the
latest completed Savepoint except those with origin RETAINED_CHECKPOINT": the
resume is refused unless that savepoint is the one the cycle took. Starting
without a savepoint uses ``NONE`` (empty state, as on every backend). What a
job restored from: the newest Job resource's ``spec.savepointLocation``.
Deleting a savepoint is asynchronous (PENDING_DELETION, DELETING, then gone;
FAILED_DELETION can be retried).

Authentication: an API token (``Authorization: Bearer``) read from
``backend.token_file`` (a mounted Secret, re-read after a 401 so a rotated
token is picked up) or ``backend.token_env``. The token is never logged.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from typing import Any

import requests

from harness_pool._errors import ConfigError, PermanentError
from harness_pool.scheduler.backends._boundary import HttpApi, NotFound, dig
from harness_pool.scheduler.backends.base import DisposalResult, SavepointResult, SubmitResult
from harness_pool.scheduler.config import BackendConfig, JobSpec
from harness_pool.scheduler.events import DisposalState, SavepointState
from harness_pool.scheduler.model import JobStatus

log = logging.getLogger(__name__)
A_TRIGGER = "harness-pool/trigger"
A_BEFORE = "harness-pool/savepoints-before"
A_STARTED = "harness-pool/started-by"
A_STRATEGY = "harness-pool/upgrade-strategy-before"
STATES = {"RUNNING": JobStatus.RUNNING, "SUSPENDED": JobStatus.FINISHED,
          "CANCELLED": JobStatus.CANCELED, "FAILED": JobStatus.FAILED,
          "FINISHED": JobStatus.FINISHED, "TRANSITIONING": JobStatus.RECONCILING}
DELETING = ("PENDING_DELETION", "DELETING")


def _created(item: dict[str, Any]) -> float:
    value = (item.get("metadata") or {}).get("createdAt")
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class VervericaBackend:
    def __init__(self, cfg: BackendConfig, session: requests.Session | None = None) -> None:
        self.cfg = cfg
        self._token = self._read_token()
        self.api = HttpApi(f"{cfg.url.rstrip('/')}/api/v1/namespaces/{cfg.namespace}",
                           "Ververica Platform", cfg.request_timeout, session,
                           headers=self._headers)

    def _read_token(self) -> str:
        if self.cfg.token_file:
            try:
                return open(self.cfg.token_file).read().strip()
            except OSError as exc:
                raise ConfigError(f"backend.token_file: cannot read {self.cfg.token_file}: "
                                  f"{exc.strerror}") from exc
        if self.cfg.token_env:
            token = os.environ.get(self.cfg.token_env, "").strip()
            if not token:
                raise ConfigError(f"backend.token_env: environment variable "
                                  f"{self.cfg.token_env} is empty or unset")
            return token
        return ""

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            return self.api.call(method, path, what, **kwargs).body
        except PermanentError as exc:
            if "HTTP 401" not in str(exc) or not self.cfg.token_file:
                raise
            fresh = self._read_token()
            if fresh == self._token:
                raise PermanentError(f"{exc}; the API token in {self.cfg.token_file} was "
                                     "refused") from exc
            log.info("Ververica Platform refused the API token; re-read %s", self.cfg.token_file)
            self._token = fresh
            return self.api.call(method, path, what, **kwargs).body

    def _deployment(self, job: JobSpec) -> dict[str, Any]:
        what = f"read deployment {job.resource}"
        dep = self._call("GET", f"/deployments/{job.resource}", what)
        for key in (("metadata", "id"), ("spec", "state"), ("status", "state")):
            dig(dep, *key, what=what)
        dep["metadata"].setdefault("annotations", {})
        dep["metadata"]["annotations"] = dep["metadata"]["annotations"] or {}
        return dict(dep)

    def _patch(self, job: JobSpec, body: dict[str, Any]) -> None:
        self._call("PATCH", f"/deployments/{job.resource}", f"update deployment {job.resource}",
                   json=body)

    def _savepoints(self, dep: dict[str, Any]) -> list[dict[str, Any]]:
        what = "list savepoints"
        data = self._call("GET", "/savepoints", what,
                          params={"deploymentId": dep["metadata"]["id"]})
        items = dig(data, "items", what=what) or []
        return sorted(items, key=_created)

    # -- JobBackend ------------------------------------------------------------------

    def find_running(self, job: JobSpec) -> list[str]:
        dep = self._deployment(job)
        running = dep["spec"]["state"] == "RUNNING" and dep["status"]["state"] in (
            "RUNNING", "TRANSITIONING")
        return [job.resource] if running else []

    def job_state(self, job: JobSpec, job_id: str) -> JobStatus | None:
        dep = self._deployment(job)
        if job_id != job.resource and dep["metadata"]["annotations"].get(A_STARTED) != job_id:
            return None
        return STATES.get(dep["status"]["state"], JobStatus.RECONCILING)

    def stop_with_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                            target_dir: str) -> None:
        dep = self._deployment(job)
        notes = dep["metadata"]["annotations"]
        if notes.get(A_TRIGGER) == trigger_id:
            return
        known = ",".join(s["metadata"]["id"] for s in self._savepoints(dep))
        strategy = json.dumps(dep["spec"].get("upgradeStrategy") or {"kind": "STATEFUL"})
        self._patch(job, {"metadata": {"annotations": {A_TRIGGER: trigger_id, A_BEFORE: known,
                                                       A_STRATEGY: strategy}},
                          "spec": {"state": "SUSPENDED",
                                   "upgradeStrategy": {"kind": "STATEFUL"}}})

    def trigger_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                          target_dir: str) -> None:
        """``POST /savepoints`` for the deployment, annotated with the trigger id; a
        savepoint that already carries the id (a restarted scheduler) is not asked again."""
        dep = self._deployment(job)
        if self._manual(dep, trigger_id) is not None:
            log.info("deployment %s: savepoint %s already requested", job.resource, trigger_id)
            return
        self._call("POST", "/savepoints", f"savepoint of deployment {job.resource}", json={
            "metadata": {"deploymentId": dep["metadata"]["id"],
                         "annotations": {A_TRIGGER: trigger_id}}})

    def _manual(self, dep: dict[str, Any], trigger_id: str) -> dict[str, Any] | None:
        for sp in self._savepoints(dep):
            if (sp["metadata"].get("annotations") or {}).get(A_TRIGGER) == trigger_id:
                return sp
        return None

    @staticmethod
    def _failure(sp: dict[str, Any]) -> str:
        return str(((sp.get("status") or {}).get("failure") or {}).get("message") or "failed")

    def savepoint_status(self, job: JobSpec, job_id: str, trigger_id: str,
                         stop: bool) -> SavepointResult:
        dep = self._deployment(job)
        where = f"deployment {job.resource}"
        if not stop:
            manual = self._manual(dep, trigger_id)
            if manual is None:
                return SavepointResult(SavepointState.FAILED,
                                       error=f"{where}: savepoint {trigger_id} was never asked")
            state = (manual.get("status") or {}).get("state")
            if state == "COMPLETED":
                return SavepointResult(SavepointState.COMPLETED,
                                       location=manual["spec"]["savepointLocation"],
                                       ref=manual["metadata"]["id"])
            if state == "FAILED":
                return SavepointResult(SavepointState.FAILED,
                                       error=f"{where}: {self._failure(manual)}")
            return SavepointResult(SavepointState.PENDING)
        notes = dep["metadata"]["annotations"]
        if notes.get(A_TRIGGER) != trigger_id:
            return SavepointResult(SavepointState.FAILED,
                                   error=f"{where}: suspend {trigger_id} was never requested")
        before = set(filter(None, notes.get(A_BEFORE, "").split(",")))
        new = [s for s in self._savepoints(dep) if s["metadata"]["id"] not in before
               and s["metadata"].get("origin") == "SUSPEND"]
        done = [s for s in new if (s.get("status") or {}).get("state") == "COMPLETED"]
        failed = [s for s in new if (s.get("status") or {}).get("state") == "FAILED"]
        if done and dep["status"]["state"] == "SUSPENDED":
            return SavepointResult(SavepointState.COMPLETED,
                                   location=done[-1]["spec"]["savepointLocation"],
                                   ref=done[-1]["metadata"]["id"])
        if failed:
            return SavepointResult(SavepointState.FAILED,
                                   error=f"{where}: {self._failure(failed[-1])}")
        if dep["status"]["state"] == "SUSPENDED":
            return SavepointResult(SavepointState.FAILED, error=f"{where} suspended without a "
                                   "new savepoint; the cycle is not safe")
        return SavepointResult(SavepointState.PENDING)

    def _strategy_back(self, dep: dict[str, Any]) -> dict[str, Any]:
        """The spec part that puts back the upgradeStrategy a suspend replaced."""
        saved = dep["metadata"]["annotations"].get(A_STRATEGY)
        if not saved:
            return {}
        try:
            return {"upgradeStrategy": json.loads(saved)}
        except ValueError:
            return {}

    def revert_stop(self, job: JobSpec, job_id: str, trigger_id: str) -> None:
        dep = self._deployment(job)
        if dep["metadata"]["annotations"].get(A_TRIGGER) == trigger_id \
                and dep["spec"]["state"] == "SUSPENDED":
            self._patch(job, {"metadata": {"annotations": {A_STRATEGY: None}},
                              "spec": {"state": "RUNNING", **self._strategy_back(dep)}})

    def submit(self, job: JobSpec, job_id: str, savepoint: str | None,
               parallelism: int | None) -> SubmitResult:
        dep = self._deployment(job)
        if dep["metadata"]["annotations"].get(A_STARTED) == job_id:
            return SubmitResult(job.resource, already=True)
        restore = "NONE"
        if savepoint:
            usable = [s for s in self._savepoints(dep)
                      if (s.get("status") or {}).get("state") == "COMPLETED"
                      and s["metadata"].get("origin") != "RETAINED_CHECKPOINT"]
            newest = usable[-1]["spec"]["savepointLocation"] if usable else ""
            if newest.rstrip("/") != savepoint.rstrip("/"):
                raise PermanentError(f"deployment {job.resource}: LATEST_SAVEPOINT would restore "
                                     f"{newest or 'nothing'}, not {savepoint}; refusing to "
                                     "resume from another savepoint")
            restore = "LATEST_SAVEPOINT"
        spec: dict[str, Any] = {"state": "RUNNING", "restoreStrategy": {"kind": restore},
                                **self._strategy_back(dep)}
        if parallelism:
            spec["template"] = {"spec": {"parallelism": parallelism}}
        self._patch(job, {"metadata": {"annotations": {A_STARTED: job_id, A_STRATEGY: None}},
                          "spec": spec})
        return SubmitResult(job.resource)

    def restored_from(self, job: JobSpec, job_id: str) -> str | None:
        dep = self._deployment(job)
        what = f"jobs of deployment {job.resource}"
        data = self._call("GET", "/jobs", what, params={"deploymentId": dep["metadata"]["id"]})
        jobs = sorted(dig(data, "items", what=what) or [], key=_created)
        if not jobs:
            return None
        location = (jobs[-1].get("spec") or {}).get("savepointLocation")
        return str(location) if location else None

    def cancel(self, job: JobSpec, job_id: str) -> None:
        self._patch(job, {"spec": {"state": "CANCELLED"}})

    def free_slots(self) -> int:
        raise PermanentError("free-slots is not known on Ververica Platform; give a number")

    def dispose(self, path: str, ref: str) -> DisposalResult:
        data = self._call("GET", "/savepoints", "list savepoints")
        items = dig(data, "items", what="list savepoints") or []
        mine = [s for s in items if (ref and s["metadata"].get("id") == ref)
                or (s.get("spec") or {}).get("savepointLocation") == path]
        if not mine:
            return DisposalResult(DisposalState.DONE, "no such savepoint on the platform")
        outcome = DisposalResult(DisposalState.DONE)
        for sp in mine:
            sid, state = sp["metadata"]["id"], (sp.get("status") or {}).get("state")
            if state in DELETING:
                outcome = DisposalResult(DisposalState.PENDING, f"savepoint {sid} is {state}")
                continue
            try:
                self._call("DELETE", f"/savepoints/{sid}", f"dispose {path}")
            except NotFound:
                continue
            after = self._call("GET", f"/savepoints/{sid}", f"dispose {path}", allow=(404,))
            state = (after.get("status") or {}).get("state") if after else None
            if state == "FAILED_DELETION":
                return DisposalResult(DisposalState.FAILED, self._failure(after))
            if state:
                outcome = DisposalResult(DisposalState.PENDING, f"savepoint {sid} is {state}")
        return outcome
