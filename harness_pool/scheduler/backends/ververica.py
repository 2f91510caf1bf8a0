"""Ververica Platform REST backend (application manager API v1).

A job is a Deployment (``job.resource``); requests are ``PATCH
/api/v1/namespaces/{ns}/deployments/{name}`` of ``spec.state`` (RUNNING,
SUSPENDED, CANCELLED) and are verified by polling ``status.state``.
Savepoints come from ``GET /savepoints?deploymentId=``; a suspend counts only
when a new COMPLETED savepoint of origin SUSPEND appears. A savepoint step is a
``POST /savepoints`` for the deployment carrying the trigger id as an annotation. The trigger id and
the newest savepoint before it are written into the deployment's annotations
with the same PATCH, so a restarted scheduler recognises its own request.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from harness_pool._errors import PermanentError, TemporaryError
from harness_pool.scheduler.backends.base import SavepointResult, SubmitResult
from harness_pool.scheduler.config import BackendConfig, JobSpec

log = logging.getLogger(__name__)
A_TRIGGER = "harness-pool/trigger"
A_BEFORE = "harness-pool/savepoints-before"
A_STARTED = "harness-pool/started-by"
STATES = {"RUNNING": "RUNNING", "SUSPENDED": "FINISHED", "CANCELLED": "CANCELED",
          "FAILED": "FAILED", "FINISHED": "FINISHED", "TRANSITIONING": "CREATED"}


class VervericaBackend:
    def __init__(self, cfg: BackendConfig, session: requests.Session | None = None) -> None:
        self.base = f"{cfg.url.rstrip('/')}/api/v1/namespaces/{cfg.namespace}"
        self.timeout = cfg.request_timeout
        self.http = session or requests.Session()

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            r = self.http.request(method, self.base + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise TemporaryError(f"{what}: Ververica Platform at {self.base} unreachable: "
                                 f"{type(exc).__name__}") from exc
        if r.status_code >= 400:
            try:
                detail = r.json().get("message", r.text)
            except ValueError:
                detail = r.text
            cls = TemporaryError if r.status_code >= 500 else PermanentError
            raise cls(f"{what}: HTTP {r.status_code}: {str(detail)[:300]}")
        return r.json() if r.content else {}

    def _deployment(self, job: JobSpec) -> dict[str, Any]:
        return dict(self._call("GET", f"/deployments/{job.resource}",
                               f"read deployment {job.resource}"))

    def _patch(self, job: JobSpec, body: dict[str, Any]) -> None:
        self._call("PATCH", f"/deployments/{job.resource}", f"update deployment {job.resource}",
                   json=body)

    def _savepoints(self, dep: dict[str, Any]) -> list[dict[str, Any]]:
        data = self._call("GET", "/savepoints", "list savepoints",
                          params={"deploymentId": dep["metadata"]["id"]})
        return sorted(data.get("items", []), key=lambda s: s["metadata"].get("createdAt", 0))

    def find_running(self, job: JobSpec) -> list[str]:
        dep = self._deployment(job)
        running = dep["spec"]["state"] == "RUNNING" and dep["status"]["state"] in (
            "RUNNING", "TRANSITIONING")
        return [job.resource] if running else []

    def job_state(self, job: JobSpec, job_id: str) -> str | None:
        return STATES.get(self._deployment(job)["status"]["state"])

    def stop_with_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                            target_dir: str) -> None:
        dep = self._deployment(job)
        notes = dep["metadata"].get("annotations") or {}
        if notes.get(A_TRIGGER) == trigger_id:
            return
        known = ",".join(s["metadata"]["id"] for s in self._savepoints(dep))
        self._patch(job, {"metadata": {"annotations": {A_TRIGGER: trigger_id, A_BEFORE: known}},
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

    def savepoint_status(self, job: JobSpec, job_id: str, trigger_id: str) -> SavepointResult:
        dep = self._deployment(job)
        manual = self._manual(dep, trigger_id)
        if manual is not None:
            state = manual["status"]["state"]
            if state == "COMPLETED":
                return SavepointResult("COMPLETED", location=manual["spec"]["savepointLocation"])
            if state == "FAILED":
                reason = (manual["status"].get("failure") or {}).get("message", "failed")
                return SavepointResult("FAILED", error=f"deployment {job.resource}: {reason}")
            return SavepointResult("IN_PROGRESS")
        notes = dep["metadata"].get("annotations") or {}
        if notes.get(A_TRIGGER) != trigger_id:
            return SavepointResult("FAILED", error=f"suspend {trigger_id} was never requested")
        before = set(filter(None, notes.get(A_BEFORE, "").split(",")))
        new = [s for s in self._savepoints(dep) if s["metadata"]["id"] not in before
               and s["metadata"].get("origin") == "SUSPEND"]
        done = [s for s in new if s["status"]["state"] == "COMPLETED"]
        failed = [s for s in new if s["status"]["state"] == "FAILED"]
        if done and dep["status"]["state"] == "SUSPENDED":
            return SavepointResult("COMPLETED", location=done[-1]["spec"]["savepointLocation"])
        if failed:
            self._patch(job, {"spec": {"state": "RUNNING"}})
            reason = (failed[-1]["status"].get("failure") or {}).get("message", "failed")
            return SavepointResult("FAILED", error=f"deployment {job.resource}: {reason}")
        if dep["status"]["state"] == "SUSPENDED":
            return SavepointResult("FAILED", error=f"deployment {job.resource} suspended "
                                   "without a new savepoint; the cycle is not safe")
        return SavepointResult("IN_PROGRESS")

    def submit(self, job: JobSpec, job_id: str, savepoint: str | None,
               parallelism: int | None) -> SubmitResult:
        dep = self._deployment(job)
        notes = dep["metadata"].get("annotations") or {}
        if notes.get(A_STARTED) == job_id:
            return SubmitResult(job.resource)
        if self.find_running(job):
            return SubmitResult(job.resource, duplicates=(job.resource,))
        restore = "NONE"
        if savepoint:
            done = [s for s in self._savepoints(dep) if s["status"]["state"] == "COMPLETED"]
            newest = done[-1]["spec"]["savepointLocation"] if done else ""
            if newest != savepoint:
                raise PermanentError(f"deployment {job.resource}: the newest savepoint is "
                                     f"{newest or 'none'}, not {savepoint}; refusing to resume "
                                     "from another savepoint")
            restore = "LATEST_SAVEPOINT"
        spec: dict[str, Any] = {"state": "RUNNING", "restoreStrategy": {"kind": restore}}
        if parallelism:
            spec["template"] = {"spec": {"parallelism": parallelism}}
        self._patch(job, {"metadata": {"annotations": {A_STARTED: job_id}}, "spec": spec})
        return SubmitResult(job.resource)

    def cancel(self, job: JobSpec, job_id: str) -> None:
        self._patch(job, {"spec": {"state": "CANCELLED"}})

    def free_slots(self) -> int:
        raise PermanentError("free-slots is not known on Ververica Platform; give a number")

    def dispose(self, path: str) -> None:
        data = self._call("GET", "/savepoints", "list savepoints")
        ids = [s["metadata"]["id"] for s in data.get("items", [])
               if s["spec"].get("savepointLocation") == path]
        if not ids:
            raise PermanentError(f"dispose {path}: no such savepoint on the platform")
        for sid in ids:
            self._call("DELETE", f"/savepoints/{sid}", f"dispose {path}")
