"""Flink Kubernetes Operator backend: FlinkDeployment / FlinkSessionJob and FlinkStateSnapshot.

A job is its custom resource (``job.resource``, kind ``job.kind``); the job id
the core sees is the resource name, and the derived id of a submission is
recorded in the annotation ``harness-pool/started-by``. Requests are writes of
``spec.job.state`` (``suspended`` with ``upgradeMode: savepoint``, or
``running``) with the ``resourceVersion`` read, so a concurrent change is a
conflict (re-read, decide again), never an overwrite. The trigger id of a
suspend and what the status said before it are written in the same update
(``harness-pool/trigger``, ``harness-pool/savepoint-before``), so re-issuing it
after a restart is recognised and not repeated.

Savepoint steps (``backend.snapshots``):
- ``resource`` (operator 1.10+ default): a ``FlinkStateSnapshot`` named after the
  trigger id (``<resource>-sp-<trigger>``, created once: a second create is
  AlreadyExists), ``spec.savepoint.path`` = ``savepoints.dir``,
  ``disposeOnDelete: true``, ``backoffLimit: 0`` (the core retries with a new
  trigger id); its ``status.state`` COMPLETED gives ``status.path``, FAILED or
  ABANDONED fail the attempt with ``status.error``. Retention deletes snapshot
  resources (the operator disposes of the data where ``disposeOnDelete``).
- ``legacy`` (snapshot resources disabled, or operator 1.9):
  ``spec.job.savepointTriggerNonce`` derived from the trigger id, completion in
  ``savepointInfo.lastSavepoint``; no disposal (the operator keeps its history).

The savepoint directory is never written into ``flinkConfiguration`` (a spec
change the operator treats as an upgrade, redeploying the job). A suspend's
upgrade savepoint goes where the resource's configuration says
(``execution.checkpointing.savepoint-dir`` from Flink 1.20, ``state.savepoints.dir``
before): a different ``savepoints.dir`` is refused before the job is touched.
How a suspend's savepoint is recognised as safe: ``operator_status``.
"""

from __future__ import annotations

import logging
from typing import Any

from harness_pool._errors import PermanentError, TemporaryError
from harness_pool.scheduler.backends import operator_status as st
from harness_pool.scheduler.backends._boundary import (
    AlreadyExists,
    NoSuchResourceType,
    NotFound,
    kube_call,
)
from harness_pool.scheduler.backends.base import DisposalResult, SavepointResult, SubmitResult
from harness_pool.scheduler.config import BackendConfig, JobSpec
from harness_pool.scheduler.events import DisposalState, SavepointState
from harness_pool.scheduler.model import JobStatus

log = logging.getLogger(__name__)

GROUP, VERSION = "flink.apache.org", "v1beta1"
PLURALS = {"FlinkDeployment": "flinkdeployments", "FlinkSessionJob": "flinksessionjobs"}
SNAPSHOTS = "flinkstatesnapshots"
A_TRIGGER = "harness-pool/trigger"
A_BEFORE = "harness-pool/savepoint-before"
A_STARTED = "harness-pool/started-by"
L_TRIGGER = "harness-pool/trigger"
NEW_DIR_KEY, OLD_DIR_KEY = "execution.checkpointing.savepoint-dir", "state.savepoints.dir"
_CRD_HINT = ("the FlinkStateSnapshot CRD (flink.apache.org/v1beta1 flinkstatesnapshots) is not "
             "installed: operator older than 1.10? set backend.snapshots: legacy")


def trigger_nonce(trigger_id: str) -> int:
    """The ``spec.job.savepointTriggerNonce`` a trigger id maps to (stable, non-zero)."""
    import hashlib

    return int(hashlib.sha256(trigger_id.encode()).hexdigest()[:12], 16) or 1


def snapshot_name(resource: str, trigger_id: str) -> str:
    return f"{resource}-sp-{trigger_id[:16]}"


def savepoint_dir_key(flink_version: str) -> str:
    """Where the resource's Flink version reads its savepoint directory from."""
    try:
        major, minor = (int(p) for p in flink_version.lstrip("v").split("_")[:2])
    except ValueError:
        return NEW_DIR_KEY
    return NEW_DIR_KEY if (major, minor) >= (1, 20) else OLD_DIR_KEY


class OperatorBackend:
    def __init__(self, api_client: Any, cfg: BackendConfig) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.namespace = cfg.namespace
        self.timeout = cfg.request_timeout
        self.resources = cfg.snapshots == "resource"

    # -- Kubernetes boundary --------------------------------------------------------

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return kube_call(f"{what} in namespace {self.namespace}", getattr(self.api, method),
                         GROUP, VERSION, self.namespace, *args,
                         _request_timeout=self.timeout, **kwargs)

    def _get(self, job: JobSpec) -> dict[str, Any]:
        obj = self._call(f"read {job.kind} {job.resource}", "get_namespaced_custom_object",
                         PLURALS[job.kind], job.resource)
        if not isinstance(obj, dict) or not isinstance(obj.get("spec"), dict):
            raise TemporaryError(f"read {job.kind} {job.resource}: the answer has no spec")
        obj["spec"].setdefault("job", {})
        return obj

    def _put(self, job: JobSpec, obj: dict[str, Any]) -> None:
        self._call(f"update {job.kind} {job.resource}", "replace_namespaced_custom_object",
                   PLURALS[job.kind], job.resource, obj)

    def _snapshot(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self._call(f"read FlinkStateSnapshot {name}",
                                   "get_namespaced_custom_object", SNAPSHOTS, name))
        except NotFound:
            return None
        except NoSuchResourceType as exc:
            raise PermanentError(f"read FlinkStateSnapshot {name}: {_CRD_HINT}") from exc

    def _snapshots(self, job: JobSpec, selector: str = "") -> list[dict[str, Any]]:
        kwargs = {"label_selector": selector} if selector else {}
        try:
            answer = self._call(f"list FlinkStateSnapshots of {job.resource}",
                                "list_namespaced_custom_object", SNAPSHOTS, **kwargs)
        except NoSuchResourceType as exc:
            raise PermanentError(f"list FlinkStateSnapshots: {_CRD_HINT}") from exc
        items = answer.get("items") or [] if isinstance(answer, dict) else []
        mine = [s for s in items
                if ((s.get("spec") or {}).get("jobReference") or {}).get("name") == job.resource
                and ((s.get("spec") or {}).get("jobReference") or {}).get("kind") == job.kind]
        return sorted(mine, key=lambda s: str(s.get("metadata", {}).get("creationTimestamp")))

    @staticmethod
    def _annotations(obj: dict[str, Any]) -> dict[str, str]:
        meta = obj.setdefault("metadata", {})
        if meta.get("annotations") is None:
            meta["annotations"] = {}
        notes: dict[str, str] = meta["annotations"]
        return notes

    def _check_dir(self, job: JobSpec, obj: dict[str, Any], target_dir: str) -> None:
        """The operator takes upgrade savepoints where the resource's configuration says."""
        if not target_dir:
            return
        conf = obj["spec"].get("flinkConfiguration") or {}
        key = savepoint_dir_key(str(obj["spec"].get("flinkVersion") or ""))
        configured = conf.get(key) or conf.get(NEW_DIR_KEY) or conf.get(OLD_DIR_KEY)
        if configured is None and job.kind == "FlinkSessionJob":
            return  # configured on the session cluster's FlinkDeployment
        if str(configured or "").rstrip("/") != target_dir.rstrip("/"):
            raise PermanentError(
                f"{job.kind} {job.resource}: savepoints.dir is {target_dir} but the operator "
                f"takes its upgrade savepoints into {key}={configured or '(unset)'}; set the "
                "two equal (changing flinkConfiguration redeploys the job, so the scheduler "
                "never writes it)")

    # -- JobBackend ------------------------------------------------------------------

    def find_running(self, job: JobSpec) -> list[str]:
        obj = self._get(job)
        if obj["spec"]["job"].get("state", "running") != "running":
            return []
        state = self._state_of(obj)
        return [job.resource] if state is not None and not state.terminal else []

    def _state_of(self, obj: dict[str, Any]) -> JobStatus | None:
        if (obj.get("status") or {}).get("lifecycleState") == "SUSPENDED":
            return JobStatus.FINISHED
        value = st.job_status(obj).get("state")
        if value is None:
            return None
        try:
            return JobStatus.parse(value)
        except ValueError:
            return JobStatus.RECONCILING  # an operator-specific transient state

    def job_state(self, job: JobSpec, job_id: str) -> JobStatus | None:
        obj = self._get(job)
        if job_id != job.resource and self._annotations(obj).get(A_STARTED) != job_id:
            return None
        return self._state_of(obj)

    def stop_with_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                            target_dir: str) -> None:
        obj = self._get(job)
        notes = self._annotations(obj)
        if notes.get(A_TRIGGER) == trigger_id:
            log.info("%s %s: suspend %s already requested", job.kind, job.resource, trigger_id)
            return
        self._check_dir(job, obj, target_dir)
        notes[A_TRIGGER] = trigger_id
        notes[A_BEFORE] = st.before_marker(obj)
        obj["spec"]["job"]["state"] = "suspended"
        obj["spec"]["job"]["upgradeMode"] = "savepoint"
        self._put(job, obj)

    def trigger_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                          target_dir: str) -> None:
        if self.resources:
            self._create_snapshot(job, trigger_id, target_dir)
            return
        obj = self._get(job)
        spec_job = obj["spec"]["job"]
        nonce = trigger_nonce(trigger_id)
        if spec_job.get("savepointTriggerNonce") == nonce:
            log.info("%s %s: savepoint %s already requested", job.kind, job.resource, trigger_id)
            return
        self._check_dir(job, obj, target_dir)
        spec_job["savepointTriggerNonce"] = nonce
        self._put(job, obj)

    def _create_snapshot(self, job: JobSpec, trigger_id: str, target_dir: str) -> None:
        name = snapshot_name(job.resource, trigger_id)
        savepoint: dict[str, Any] = {"disposeOnDelete": True, "formatType": "CANONICAL",
                                     "alreadyExists": False}
        if target_dir:
            savepoint["path"] = target_dir
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FlinkStateSnapshot",
                "metadata": {"name": name, "labels": {L_TRIGGER: trigger_id}},
                "spec": {"jobReference": {"kind": job.kind, "name": job.resource},
                         "savepoint": savepoint, "backoffLimit": 0}}
        try:
            self._call(f"create FlinkStateSnapshot {name}", "create_namespaced_custom_object",
                       SNAPSHOTS, body)
        except AlreadyExists:
            log.info("FlinkStateSnapshot %s exists already (trigger %s asked before)", name,
                     trigger_id)
        except NoSuchResourceType as exc:
            raise PermanentError(f"create FlinkStateSnapshot {name}: {_CRD_HINT}") from exc

    def savepoint_status(self, job: JobSpec, job_id: str, trigger_id: str,
                         stop: bool) -> SavepointResult:
        where = f"{job.kind} {job.resource}"
        if not stop and self.resources:
            name = snapshot_name(job.resource, trigger_id)
            snapshot = self._snapshot(name)
            if snapshot is None:
                return SavepointResult(SavepointState.FAILED, error=f"FlinkStateSnapshot "
                                       f"{name} does not exist (never created, or deleted)")
            return st.snapshot_result(snapshot)
        obj = self._get(job)
        if not stop:
            return st.legacy_manual_result(obj, trigger_nonce(trigger_id), where)
        notes = self._annotations(obj)
        if notes.get(A_TRIGGER) != trigger_id:
            return SavepointResult(SavepointState.FAILED,
                                   error=f"{where}: suspend {trigger_id} was never requested")
        status = obj.get("status") or {}
        if status.get("lifecycleState") == "SUSPENDED":
            upgrades = self._snapshots(job, f"{st.LABEL_TRIGGER_TYPE}=UPGRADE") \
                if self.resources else None
            return st.suspend_result(obj, notes.get(A_BEFORE, ""), upgrades, job.kind,
                                     job.resource)
        error = str(status.get("error") or "")
        if "savepoint" in error.lower() and self._state_of(obj) is JobStatus.RUNNING:
            return SavepointResult(SavepointState.FAILED, error=f"{where}: {error[:300]}")
        return SavepointResult(SavepointState.PENDING)

    def revert_stop(self, job: JobSpec, job_id: str, trigger_id: str) -> None:
        obj = self._get(job)
        spec_job = obj["spec"]["job"]
        if self._annotations(obj).get(A_TRIGGER) == trigger_id \
                and spec_job.get("state") == "suspended":
            spec_job["state"] = "running"
            self._put(job, obj)
            log.warning("%s %s: suspend %s failed; spec.job.state set back to running",
                        job.kind, job.resource, trigger_id)

    def submit(self, job: JobSpec, job_id: str, savepoint: str | None,
               parallelism: int | None) -> SubmitResult:
        obj = self._get(job)
        notes = self._annotations(obj)
        spec_job = obj["spec"]["job"]
        if notes.get(A_STARTED) == job_id:
            return SubmitResult(job.resource, already=True)
        if savepoint:
            source = st.restore_source(obj)
            if source.rstrip("/") != savepoint.rstrip("/"):
                raise PermanentError(
                    f"{job.kind} {job.resource}: the operator would restore from "
                    f"{source or 'no savepoint'}, not {savepoint}; refusing to resume "
                    "from another savepoint")
            spec_job["upgradeMode"] = "savepoint"
        else:
            spec_job["upgradeMode"] = "stateless"  # no savepoint: empty state, as elsewhere
        if parallelism:
            spec_job["parallelism"] = parallelism
        spec_job["state"] = "running"
        notes[A_STARTED] = job_id
        self._put(job, obj)
        return SubmitResult(job.resource)

    def restored_from(self, job: JobSpec, job_id: str) -> str | None:
        return st.restore_source(self._get(job)) or None

    def cancel(self, job: JobSpec, job_id: str) -> None:
        obj = self._get(job)
        obj["spec"]["job"]["state"] = "suspended"
        obj["spec"]["job"]["upgradeMode"] = "stateless"
        self._put(job, obj)

    def free_slots(self) -> int:
        raise PermanentError("free-slots is not known through the operator; give a number")

    def dispose(self, path: str, ref: str) -> DisposalResult:
        if not self.resources:
            return DisposalResult(DisposalState.FAILED, "the operator in legacy mode keeps its "
                                  "own savepoint history; nothing to delete")
        names = [ref] if ref else [
            s["metadata"]["name"] for s in self._all_snapshots()
            if (s.get("status") or {}).get("path") == path
            or ((s.get("spec") or {}).get("savepoint") or {}).get("path") == path]
        if not names:
            return DisposalResult(DisposalState.DONE, "no FlinkStateSnapshot holds it")
        pending = []
        for name in names:
            try:
                answer = self._call(f"delete FlinkStateSnapshot {name}",
                                    "delete_namespaced_custom_object", SNAPSHOTS, name)
            except NotFound:
                continue
            if isinstance(answer, dict) and (answer.get("metadata") or {}).get(
                    "deletionTimestamp"):
                pending.append(name)
        if pending:
            return DisposalResult(DisposalState.PENDING, f"FlinkStateSnapshot "
                                  f"{', '.join(pending)} is being deleted (the operator "
                                  "disposes of the data while the job runs)")
        return DisposalResult(DisposalState.DONE)

    def _all_snapshots(self) -> list[dict[str, Any]]:
        answer = self._call("list FlinkStateSnapshots", "list_namespaced_custom_object",
                            SNAPSHOTS)
        return list(answer.get("items") or []) if isinstance(answer, dict) else []
