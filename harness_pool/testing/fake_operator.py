"""A simulated Flink Kubernetes Operator for the fake API server (``fake_kube``).

Followed (apache/flink-kubernetes-operator sources and docs): the current
release line (1.13.0: ``docs/content/docs/custom-resource/snapshots.md``,
``FlinkStateSnapshotSpec``/``FlinkStateSnapshotStatus``,
``StateSnapshotReconciler``, ``FlinkStateSnapshotUtils``,
``AbstractJobReconciler.setUpgradeSavepointPath``, ``ApplicationReconciler.deploy``,
``SnapshotObserver``), with older behaviour behind switches:

- ``snapshot_resources`` (default True, as ``kubernetes.operator.snapshot.
  resource.enabled`` defaults since 1.10): savepoints are ``FlinkStateSnapshot``
  resources. A created one moves TRIGGER_PENDING -> IN_PROGRESS (``triggerId``)
  -> COMPLETED (``status.path``), or FAILED (``status.error``, ``failures``; retried
  while ``backoffLimit`` allows) or ABANDONED (the referenced job is not running).
  ``spec.savepoint.path`` is the target directory; without it the resource's
  savepoint directory is used (``execution.checkpointing.savepoint-dir``, or
  ``state.savepoints.dir`` before Flink 1.20), and with neither the snapshot fails
  with the operator's message. A suspend with ``upgradeMode: savepoint``
  records its savepoint in ``status.jobStatus.upgradeSavepointPath`` and as a
  FlinkStateSnapshot ``<name>-savepoint-upgrade-<millis>`` labelled
  ``snapshot.trigger-type: UPGRADE`` with ``alreadyExists: true``; *not* in
  ``savepointInfo``. Deleting a snapshot with ``disposeOnDelete`` disposes of the
  savepoint first, which needs the referenced job running: until then the
  resource stays with a ``deletionTimestamp`` (the operator's finalizer).
- ``snapshot_resources=False`` (the option off): the same upgrade path also goes
  to ``savepointInfo.lastSavepoint`` (triggerType UPGRADE); manual savepoints use
  ``spec.job.savepointTriggerNonce``: ``savepointInfo.triggerId`` while running,
  then ``lastSavepoint`` with the nonce, or, on failure, nothing but the
  operator's ``SavepointError`` Event: the trigger is reset and the nonce
  recorded as reconciled (``status.reconciliationStatus.lastReconciledSpec``).
- ``version="1.9"``: as the option off, but there is no ``upgradeSavepointPath``;
  a restore uses ``lastSavepoint``, which the last checkpoint of a terminated job
  (triggerType UNKNOWN) and periodic savepoints also overwrite.

Switches for what a safe scheduler must refuse: ``fallback_last_state``
(suspend without a savepoint: the operator's last-state fallback),
``last_state_deploy`` (the resource was deployed last-state: upgradeSavepointPath
is ``KUBERNETES_OPERATOR_LAST_STATE``), ``terminal_checkpoint`` (a job that
reaches a terminal state gets its last checkpoint recorded, as
``observeLatestCheckpoint`` does), ``periodic_after_suspend`` (1.9: a periodic
savepoint overwrites lastSavepoint right after the suspend), ``savepoint_fails``,
``never_finishes``. ``restored_from`` logs which savepoint each start used and
``disposed`` every savepoint disposed of.

The operator advances an object one step each time it is read (no threads,
no sleeps: a test polls, the operator moves).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PLACEHOLDER = "KUBERNETES_OPERATOR_LAST_STATE"
FINALIZER = "flinkstatesnapshots.flink.apache.org/finalizer"
Lookup = Callable[[str, str], "dict[str, Any] | None"]


def savepoint_dir(spec: dict[str, Any]) -> str | None:
    conf = spec.get("flinkConfiguration") or {}
    return conf.get("execution.checkpointing.savepoint-dir") or conf.get("state.savepoints.dir")


@dataclass
class FakeOperator:
    snapshot_resources: bool = True
    version: str = "1.13"
    dispose_on_delete: bool = False
    """``kubernetes.operator.savepoint.dispose-on-delete`` for upgrade snapshots."""
    fallback_last_state: set[str] = field(default_factory=set)
    last_state_deploy: set[str] = field(default_factory=set)
    terminal_checkpoint: set[str] = field(default_factory=set)
    periodic_after_suspend: set[str] = field(default_factory=set)
    savepoint_fails: set[str] = field(default_factory=set)
    never_finishes: set[str] = field(default_factory=set)
    finish_after_reads: int = 3
    """A job whose name starts with 'bounded' reaches FINISHED after this many reads."""
    restored_from: list[tuple[str, str | None]] = field(default_factory=list)
    disposed: list[str] = field(default_factory=list)
    savepoints_taken: int = 0
    created: list[dict[str, Any]] = field(default_factory=list)
    """Objects the operator created (upgrade snapshots); the API server stores them."""

    def __post_init__(self) -> None:
        if self.version == "1.9":
            self.snapshot_resources = False  # FlinkStateSnapshot arrived in 1.10

    @property
    def legacy_19(self) -> bool:
        return self.version == "1.9"

    def _new_path(self, name: str, spec: dict[str, Any], target: str | None = None) -> str:
        self.savepoints_taken += 1
        base = (target or savepoint_dir(spec) or "file:/savepoints").rstrip("/")
        return f"{base}/{name}/savepoint-{self.savepoints_taken:04d}"

    # -- FlinkDeployment / FlinkSessionJob -------------------------------------------

    def step(self, obj: dict[str, Any], lookup: Lookup) -> bool:
        """Advance one reconcile step; True when the object changed."""
        kind = obj.get("kind")
        if kind == "FlinkStateSnapshot":
            return self._snapshot_step(obj, lookup)
        if kind not in ("FlinkDeployment", "FlinkSessionJob"):
            return False
        name = obj["metadata"]["name"]
        job = obj.setdefault("spec", {}).setdefault("job", {})
        status = obj.setdefault("status", {})
        js = status.setdefault("jobStatus", {})
        if not self.legacy_19:
            js.setdefault("upgradeSavepointPath", None)
        life = status.get("lifecycleState", "CREATED")
        want = job.get("state", "running")
        nonce = obj["spec"].get("restartNonce")
        if want == "suspended" and life != "SUSPENDED":
            return self._suspend(name, obj, status, js)
        if want == "running" and (life in ("CREATED", "SUSPENDED")
                                  or nonce != status.get("_observedNonce")):
            return self._deploy(name, obj, status, js, nonce)
        if want == "running" and js.get("state") == "RECONCILING":
            js["state"], status["lifecycleState"] = "RUNNING", "STABLE"
            return True
        manual = job.get("savepointTriggerNonce")
        if want == "running" and js.get("state") == "RUNNING" and manual is not None \
                and manual != self._reconciled_nonce(status) and not self.snapshot_resources:
            return self._manual_savepoint(name, obj, manual, status, js)
        if want == "running" and js.get("state") == "RUNNING" and name.startswith("bounded"):
            status["_reads"] = status.get("_reads", 0) + 1
            if name not in self.never_finishes and status["_reads"] >= self.finish_after_reads:
                js["state"] = "FINISHED"
                self._observe_terminal(name, obj, js)
                return True
        return False

    def _deploy(self, name: str, obj: dict[str, Any], status: dict[str, Any],
                js: dict[str, Any], nonce: Any) -> bool:
        job = obj["spec"]["job"]
        status["_observedNonce"] = nonce
        status["lifecycleState"] = "DEPLOYED"
        status.pop("error", None)
        js["state"] = "RECONCILING"
        js["jobId"] = f"{abs(hash((name, nonce, len(self.restored_from)))):032x}"[:32]
        restore = None
        if job.get("upgradeMode", "stateless") != "stateless":
            restore = (js.get("savepointInfo") or {}).get("lastSavepoint", {}).get("location") \
                if self.legacy_19 else js.get("upgradeSavepointPath")
        if name in self.last_state_deploy and not self.legacy_19:
            js["upgradeSavepointPath"] = PLACEHOLDER
        self.restored_from.append((name, restore))
        status["_reads"] = 0
        return True

    def _suspend(self, name: str, obj: dict[str, Any], status: dict[str, Any],
                 js: dict[str, Any]) -> bool:
        mode = obj["spec"]["job"].get("upgradeMode", "stateless")
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
            path = self._new_path(name, obj["spec"])
            self._record_upgrade(name, obj, js, path)
        js["state"] = "FINISHED"
        status["lifecycleState"] = "SUSPENDED"
        return True

    def _record_upgrade(self, name: str, obj: dict[str, Any], js: dict[str, Any],
                        path: str) -> None:
        millis = 1_700_000_000_000 + self.savepoints_taken
        if not self.legacy_19:
            js["upgradeSavepointPath"] = path
        if self.snapshot_resources and not self.legacy_19:
            self.created.append({
                "apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkStateSnapshot",
                "metadata": {"name": f"{name}-savepoint-upgrade-{millis}",
                             "namespace": obj["metadata"].get("namespace", "default"),
                             "labels": {"snapshot.trigger-type": "UPGRADE"}},
                "spec": {"jobReference": {"kind": obj["kind"], "name": name},
                         "savepoint": {"path": path, "alreadyExists": True,
                                       "disposeOnDelete": self.dispose_on_delete,
                                       "formatType": "CANONICAL"},
                         "backoffLimit": -1}})
            return
        info = js.setdefault("savepointInfo", {})
        info["lastSavepoint"] = {"location": path, "triggerType": "UPGRADE",
                                 "formatType": "CANONICAL", "timeStamp": millis}
        info.setdefault("savepointHistory", []).append(info["lastSavepoint"])
        if name in self.periodic_after_suspend:
            info["lastSavepoint"] = {"location": self._new_path(name, obj["spec"]),
                                     "triggerType": "PERIODIC", "timeStamp": millis + 1}

    def _observe_terminal(self, name: str, obj: dict[str, Any], js: dict[str, Any]) -> None:
        """``observeLatestCheckpoint``: a terminated job's last checkpoint is recorded."""
        if name not in self.terminal_checkpoint:
            return
        checkpoint = f"file:/checkpoints/{name}/chk-{self.savepoints_taken + 7}"
        if self.legacy_19:
            js.setdefault("savepointInfo", {})["lastSavepoint"] = {
                "location": checkpoint, "triggerType": "UNKNOWN"}
        else:
            js["upgradeSavepointPath"] = checkpoint

    @staticmethod
    def _reconciled_nonce(status: dict[str, Any]) -> Any:
        spec = json.loads((status.get("reconciliationStatus") or {}).get(
            "lastReconciledSpec") or "{}")
        return (spec.get("job") or {}).get("savepointTriggerNonce")

    def _manual_savepoint(self, name: str, obj: dict[str, Any], nonce: int,
                          status: dict[str, Any], js: dict[str, Any]) -> bool:
        """Legacy manual savepoint: first read starts it (``savepointInfo.triggerId``), the
        next completes it (``lastSavepoint`` with the nonce) or fails it: 1.9-1.13 emit a
        SavepointError Event, reset the trigger and record the nonce as reconciled."""
        info = js.setdefault("savepointInfo", {})
        if not info.get("triggerId"):
            info["triggerId"] = f"{nonce:032x}"[:32]
            info["triggerType"] = "MANUAL"
            return True
        info.pop("triggerId")
        info.pop("triggerType", None)
        reconciled = status.setdefault("reconciliationStatus", {})
        spec = json.loads(reconciled.get("lastReconciledSpec") or "{}")
        spec.setdefault("job", {})["savepointTriggerNonce"] = nonce
        reconciled["lastReconciledSpec"] = json.dumps(spec)
        if name in self.savepoint_fails:
            status.setdefault("_events", []).append("SavepointError")
            return True
        path = self._new_path(name, obj["spec"])
        info["lastSavepoint"] = {"location": path, "triggerType": "MANUAL",
                                 "formatType": "CANONICAL", "triggerNonce": nonce,
                                 "timeStamp": 1_000 * self.savepoints_taken}
        info.setdefault("savepointHistory", []).append(info["lastSavepoint"])
        return True

    # -- FlinkStateSnapshot ----------------------------------------------------------

    def _snapshot_step(self, snap: dict[str, Any], lookup: Lookup) -> bool:
        spec = snap.get("spec") or {}
        status = snap.setdefault("status", {})
        meta = snap["metadata"]
        finalizers = meta.setdefault("finalizers", [])
        if FINALIZER not in finalizers:
            finalizers.append(FINALIZER)
        if meta.get("deletionTimestamp"):
            return False
        state = status.get("state")
        if state in ("COMPLETED", "FAILED", "ABANDONED"):
            return False
        sp = spec.get("savepoint") or {}
        if sp.get("alreadyExists"):
            status.update(state="COMPLETED", path=sp.get("path"), error=None)
            return True
        ref = spec.get("jobReference") or {}
        target = lookup(ref.get("kind", ""), ref.get("name", ""))
        if target is None or ((target.get("status") or {}).get("jobStatus") or {}).get(
                "state") != "RUNNING":
            status.update(state="ABANDONED", path=None,
                          error=f"Secondary resource {ref.get('name')} ({ref.get('kind')}) for "
                          f"savepoint {meta['name']} is "
                          f"{'not running' if target else 'not found'}")
            return True
        if state in (None, "TRIGGER_PENDING"):
            if not sp.get("path") and not savepoint_dir(target.get("spec") or {}):
                return self._snapshot_error(snap, "Either the savepoint path in the spec or "
                                            "configuration execution.checkpointing.savepoint-dir"
                                            " in the Flink resource has to be supplied")
            status.update(state="IN_PROGRESS", triggerId=f"{abs(hash(meta['name'])):032x}"[:32])
            return True
        name = ref.get("name", "")
        if name in self.savepoint_fails:
            return self._snapshot_error(snap, "java.util.concurrent.CompletionException: "
                                        "java.io.IOException: Cannot create savepoint directory")
        status.update(state="COMPLETED", path=self._new_path(name, target["spec"],
                                                             sp.get("path")), error=None)
        return True

    @staticmethod
    def _snapshot_error(snap: dict[str, Any], error: str) -> bool:
        status = snap["status"]
        status["failures"] = int(status.get("failures") or 0) + 1
        status["error"] = error
        limit = int((snap.get("spec") or {}).get("backoffLimit", -1))
        status["state"] = "FAILED" if 0 <= limit < status["failures"] else "TRIGGER_PENDING"
        return True

    def cleanup(self, snap: dict[str, Any], lookup: Lookup) -> bool:
        """The snapshot controller's finalizer on delete; True when the object may go."""
        sp = (snap.get("spec") or {}).get("savepoint") or {}
        status = snap.get("status") or {}
        if not sp or not sp.get("disposeOnDelete", True) or status.get("state") != "COMPLETED" \
                or not status.get("path"):
            return True
        ref = (snap.get("spec") or {}).get("jobReference") or {}
        target = lookup(ref.get("kind", ""), ref.get("name", ""))
        if target is None or ((target.get("status") or {}).get("jobStatus") or {}).get(
                "state") != "RUNNING":
            return False  # "Cannot dispose of snapshot because referenced Flink job is not
            # running": the finalizer stays, the resource waits with its deletionTimestamp
        self.disposed.append(str(status["path"]))
        return True
