"""Flink Kubernetes Operator backend: FlinkDeployment / FlinkSessionJob through the official client.

A job is its custom resource (``job.resource``, kind ``job.kind``); the job id
the core sees is the resource name. Requests are writes of ``spec.job.state``
(``suspended`` with ``upgradeMode: savepoint``, or ``running``) with the last
``resourceVersion`` read, so a concurrent change is a conflict, not an
overwrite. Our intent is also written into annotations
(``harness-pool/trigger``, ``harness-pool/savepoint-before``,
``harness-pool/started-by``) so that re-issuing a request after a restart is
recognised and not repeated.

Safety: a suspend counts as a savepoint only if the operator reports a *new*
UPGRADE savepoint location (``status.jobStatus.upgradeSavepointPath`` or
``savepointInfo.lastSavepoint``). A suspend that ends without one is the
operator's last-state fallback: reported as a failed savepoint, so the cycle
is not counted safe, and the job is set back to running.
"""

from __future__ import annotations

import logging
from typing import Any

from harness_pool._errors import PermanentError, TemporaryError
from harness_pool.scheduler.backends.base import SavepointResult, SubmitResult
from harness_pool.scheduler.config import JobSpec

log = logging.getLogger(__name__)

GROUP, VERSION = "flink.apache.org", "v1beta1"
PLURALS = {"FlinkDeployment": "flinkdeployments", "FlinkSessionJob": "flinksessionjobs"}
A_TRIGGER = "harness-pool/trigger"
A_BEFORE = "harness-pool/savepoint-before"
A_STARTED = "harness-pool/started-by"
A_KIND = "harness-pool/trigger-kind"  # "suspend" or "savepoint"


def trigger_nonce(trigger_id: str) -> int:
    """The ``spec.job.savepointTriggerNonce`` a trigger id maps to (stable, non-zero)."""
    import hashlib

    return int(hashlib.sha256(trigger_id.encode()).hexdigest()[:12], 16) or 1


def _savepoint_of(obj: dict[str, Any]) -> str:
    js = obj.get("status", {}).get("jobStatus", {}) or {}
    path = js.get("upgradeSavepointPath")
    if path:
        return str(path)
    last = (js.get("savepointInfo") or {}).get("lastSavepoint") or {}
    return str(last.get("location") or "")


class OperatorBackend:
    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.namespace = namespace

    # -- Kubernetes boundary --------------------------------------------------------

    def _get(self, job: JobSpec) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            obj: Any = self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURALS[job.kind], job.resource)
            return dict(obj)
        except ApiException as exc:
            raise self._translate(exc, f"read {job.kind} {job.resource}") from exc
        except OSError as exc:
            raise TemporaryError(f"read {job.kind} {job.resource}: {exc}") from exc

    def _put(self, job: JobSpec, obj: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.replace_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURALS[job.kind], job.resource, obj)
        except ApiException as exc:
            raise self._translate(exc, f"update {job.kind} {job.resource}") from exc
        except OSError as exc:
            raise TemporaryError(f"update {job.kind} {job.resource}: {exc}") from exc

    def _translate(self, exc: Any, what: str) -> Exception:
        where = f"{what} in namespace {self.namespace}"
        if exc.status == 404:
            return PermanentError(f"{where}: not found")
        if exc.status == 409:
            return TemporaryError(f"{where}: changed concurrently (409); will re-read")
        if exc.status is None or exc.status >= 500 or exc.status == 429:
            return TemporaryError(f"{where}: HTTP {exc.status}")
        return PermanentError(f"{where}: HTTP {exc.status} {exc.reason}")

    @staticmethod
    def _annotations(obj: dict[str, Any]) -> dict[str, str]:
        meta = obj.setdefault("metadata", {})
        if meta.get("annotations") is None:
            meta["annotations"] = {}
        return meta["annotations"]

    # -- JobBackend ------------------------------------------------------------------

    def find_running(self, job: JobSpec) -> list[str]:
        obj = self._get(job)
        spec_state = obj.get("spec", {}).get("job", {}).get("state", "running")
        js = obj.get("status", {}).get("jobStatus", {}) or {}
        if spec_state == "running" and js.get("state") in ("RUNNING", "CREATED", "RECONCILING"):
            return [job.resource]
        return []

    def job_state(self, job: JobSpec, job_id: str) -> str | None:
        obj = self._get(job)
        status = obj.get("status", {})
        if status.get("lifecycleState") == "SUSPENDED":
            return "FINISHED"
        state = (status.get("jobStatus") or {}).get("state")
        return None if state is None else {"RECONCILING": "CREATED"}.get(state, state)

    def stop_with_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                            target_dir: str) -> None:
        obj = self._get(job)
        notes = self._annotations(obj)
        if notes.get(A_TRIGGER) == trigger_id:
            log.info("%s %s: suspend %s already requested", job.kind, job.resource, trigger_id)
            return
        notes[A_TRIGGER] = trigger_id
        notes[A_KIND] = "suspend"
        notes[A_BEFORE] = _savepoint_of(obj)
        spec_job = obj["spec"]["job"]
        spec_job["state"] = "suspended"
        spec_job["upgradeMode"] = "savepoint"
        if target_dir:
            obj["spec"].setdefault("flinkConfiguration", {})[
                "execution.checkpointing.savepoint-dir"] = target_dir
        self._put(job, obj)

    def trigger_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                          target_dir: str) -> None:
        """A manual savepoint of the running job: the operator's documented
        ``spec.job.savepointTriggerNonce`` (a new value triggers one). The nonce is
        derived from the trigger id, so asking twice triggers once."""
        obj = self._get(job)
        spec_job = obj["spec"]["job"]
        nonce = trigger_nonce(trigger_id)
        if spec_job.get("savepointTriggerNonce") == nonce:
            log.info("%s %s: savepoint %s already requested", job.kind, job.resource, trigger_id)
            return
        notes = self._annotations(obj)
        notes[A_TRIGGER] = trigger_id
        notes[A_KIND] = "savepoint"
        spec_job["savepointTriggerNonce"] = nonce
        if target_dir:
            obj["spec"].setdefault("flinkConfiguration", {})[
                "execution.checkpointing.savepoint-dir"] = target_dir
        self._put(job, obj)

    def savepoint_status(self, job: JobSpec, job_id: str, trigger_id: str) -> SavepointResult:
        obj = self._get(job)
        status = obj.get("status", {})
        notes = self._annotations(obj)
        if notes.get(A_TRIGGER) != trigger_id:
            return SavepointResult("FAILED", error=f"savepoint {trigger_id} was never requested")
        error = str(status.get("error") or "")
        if notes.get(A_KIND) == "savepoint":
            info = (status.get("jobStatus") or {}).get("savepointInfo") or {}
            last = info.get("lastSavepoint") or {}
            if last.get("triggerNonce") == trigger_nonce(trigger_id) and last.get("location"):
                return SavepointResult("COMPLETED", location=str(last["location"]))
            if "savepoint" in error.lower():
                return SavepointResult("FAILED", error=f"{job.kind} {job.resource}: {error}")
            return SavepointResult("IN_PROGRESS")
        if status.get("lifecycleState") == "SUSPENDED":
            path = _savepoint_of(obj)
            if path and path != notes.get(A_BEFORE, ""):
                return SavepointResult("COMPLETED", location=path)
            self._undo_suspend(job, obj)
            return SavepointResult("FAILED", error=(
                f"{job.kind} {job.resource}: the operator suspended the job without a new "
                "savepoint (last-state fallback); the cycle is not safe"))
        if "savepoint" in error.lower():
            self._undo_suspend(job, obj)
            return SavepointResult("FAILED", error=f"{job.kind} {job.resource}: {error}")
        return SavepointResult("IN_PROGRESS")

    def _undo_suspend(self, job: JobSpec, obj: dict[str, Any]) -> None:
        """After a failed suspend, ask for running again (the job must not stay stopped)."""
        spec_job = obj["spec"]["job"]
        if spec_job.get("state") == "suspended":
            spec_job["state"] = "running"
            self._put(job, obj)
            log.warning("%s %s: suspend failed; spec.job.state set back to running",
                        job.kind, job.resource)

    def submit(self, job: JobSpec, job_id: str, savepoint: str | None,
               parallelism: int | None) -> SubmitResult:
        obj = self._get(job)
        notes = self._annotations(obj)
        spec_job = obj["spec"]["job"]
        if notes.get(A_STARTED) == job_id:
            return SubmitResult(job.resource)
        if spec_job.get("state") == "running" and self.find_running(job):
            return SubmitResult(job.resource, duplicates=(job.resource,))
        if savepoint:
            reported = _savepoint_of(obj)
            if reported != savepoint:
                raise PermanentError(
                    f"{job.kind} {job.resource}: the operator would restore from "
                    f"{reported or 'no savepoint'}, not {savepoint}; refusing to resume "
                    "from another savepoint")
            spec_job["upgradeMode"] = "savepoint"
        else:
            spec_job["upgradeMode"] = spec_job.get("upgradeMode") or "stateless"
            obj["spec"]["restartNonce"] = int(obj["spec"].get("restartNonce") or 0) + 1
        if parallelism:
            spec_job["parallelism"] = parallelism
        spec_job["state"] = "running"
        notes[A_STARTED] = job_id
        self._put(job, obj)
        return SubmitResult(job.resource)

    def cancel(self, job: JobSpec, job_id: str) -> None:
        obj = self._get(job)
        obj["spec"]["job"]["state"] = "suspended"
        obj["spec"]["job"]["upgradeMode"] = "stateless"
        self._put(job, obj)

    def free_slots(self) -> int:
        raise PermanentError("free-slots is not known through the operator; give a number")

    def dispose(self, path: str) -> None:
        raise PermanentError("savepoint disposal is the operator's job "
                             "(kubernetes.operator.savepoint.history.max.count/age)")
