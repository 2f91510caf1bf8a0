"""Reading the Flink Kubernetes Operator's status: pure functions over custom resources.

Written from the operator's sources (apache/flink-kubernetes-operator,
release-1.9.0, release-1.10.0 and release-1.13.0):

- ``FlinkStateSnapshot`` (1.10+, FLIP-446; on by default,
  ``kubernetes.operator.snapshot.resource.enabled``): ``status.state`` is one of
  TRIGGER_PENDING, IN_PROGRESS, COMPLETED, FAILED, ABANDONED
  (``FlinkStateSnapshotStatus.State``); ``status.path`` the savepoint,
  ``status.error`` why it failed or was abandoned.
- An upgrade (suspend) savepoint is recorded, in 1.10+, in
  ``status.jobStatus.upgradeSavepointPath`` and, with snapshot resources, as a
  FlinkStateSnapshot labelled ``snapshot.trigger-type: UPGRADE`` with
  ``spec.savepoint.alreadyExists: true`` (``FlinkStateSnapshotUtils.
  createUpgradeSnapshotResource``), *not* in ``savepointInfo``; without snapshot
  resources, also as ``savepointInfo.lastSavepoint`` (triggerType UPGRADE).
- ``upgradeSavepointPath`` is not always a savepoint of that suspend: after a
  last-state deploy it holds the placeholder ``KUBERNETES_OPERATOR_LAST_STATE``
  (``AbstractJobReconciler.LAST_STATE_DUMMY_SP_PATH``), and for a terminated job
  the observer writes the job's last *checkpoint* there
  (``SnapshotObserver.observeLatestCheckpoint``). In 1.9 the field does not
  exist and ``savepointInfo.lastSavepoint`` is also overwritten by periodic
  savepoints and by the last checkpoint of a terminated job (triggerType
  PERIODIC / UNKNOWN).

So a suspend counts as safe only if the path is new (not the one recorded
before the suspend), is not the placeholder, and is backed by an UPGRADE
record: an UPGRADE FlinkStateSnapshot of this resource with that path
(resources), or ``lastSavepoint`` of triggerType UPGRADE with that path
(legacy). Everything else is refused with the reason.
"""

from __future__ import annotations

from typing import Any

from harness_pool.scheduler.backends.base import SavepointResult
from harness_pool.scheduler.events import SavepointState

LAST_STATE_PLACEHOLDER = "KUBERNETES_OPERATOR_LAST_STATE"
LABEL_TRIGGER_TYPE = "snapshot.trigger-type"
SNAPSHOT_STATES_PENDING = ("TRIGGER_PENDING", "IN_PROGRESS", "", None)


def job_status(obj: dict[str, Any]) -> dict[str, Any]:
    return (obj.get("status") or {}).get("jobStatus") or {}


def last_savepoint(obj: dict[str, Any]) -> dict[str, Any]:
    return (job_status(obj).get("savepointInfo") or {}).get("lastSavepoint") or {}


def upgrade_path(obj: dict[str, Any]) -> str | None:
    """``upgradeSavepointPath`` (None when the field does not exist: operator 1.9)."""
    js = job_status(obj)
    if "upgradeSavepointPath" not in js:
        return None
    return str(js.get("upgradeSavepointPath") or "")


def restore_source(obj: dict[str, Any]) -> str:
    """The savepoint the operator restores from (and reports it restored from)."""
    path = upgrade_path(obj)
    if path is not None:
        return path
    return str(last_savepoint(obj).get("location") or "")


def before_marker(obj: dict[str, Any]) -> str:
    """What to remember before a suspend, to recognise a *new* upgrade savepoint after it."""
    path = upgrade_path(obj)
    return path if path is not None else str(last_savepoint(obj).get("location") or "")


def snapshot_result(snapshot: dict[str, Any]) -> SavepointResult:
    """A FlinkStateSnapshot as a savepoint result."""
    name = (snapshot.get("metadata") or {}).get("name", "?")
    status = snapshot.get("status") or {}
    state = status.get("state")
    if state in SNAPSHOT_STATES_PENDING:
        return SavepointResult(SavepointState.PENDING)
    if state == "COMPLETED":
        if not status.get("path"):
            return SavepointResult(SavepointState.FAILED,
                                   error=f"FlinkStateSnapshot {name} COMPLETED without a path")
        return SavepointResult(SavepointState.COMPLETED, location=str(status["path"]), ref=name)
    return SavepointResult(SavepointState.FAILED, error=f"FlinkStateSnapshot {name} {state}: "
                           f"{status.get('error') or 'no error given'}")


def suspend_result(obj: dict[str, Any], before: str, snapshots: list[dict[str, Any]] | None,
                   kind: str, name: str) -> SavepointResult:
    """The savepoint a finished suspend produced, or why there is none that is safe.

    ``snapshots``: the resource's UPGRADE FlinkStateSnapshots (None: legacy mode).
    """
    where = f"{kind} {name}"
    path = upgrade_path(obj)
    last = last_savepoint(obj)
    if snapshots is not None:
        found = path or ""
        if not found:
            return _unsafe(where, "no upgrade savepoint recorded (last-state fallback)")
        if found == LAST_STATE_PLACEHOLDER:
            return _unsafe(where, f"upgradeSavepointPath is {LAST_STATE_PLACEHOLDER} "
                           "(last-state, no savepoint)")
        if found == before:
            return _unsafe(where, f"upgradeSavepointPath {found} is the one from before the "
                           "suspend (last-state fallback)")
        backing = [s for s in snapshots
                   if ((s.get("spec") or {}).get("savepoint") or {}).get("path") == found]
        if not backing:
            return _unsafe(where, f"no UPGRADE FlinkStateSnapshot records {found} (a "
                           "checkpoint of a terminated job, not a savepoint of this suspend)")
        return SavepointResult(SavepointState.COMPLETED, location=found,
                               ref=str(backing[-1]["metadata"]["name"]))
    location = str(last.get("location") or "")
    if last.get("triggerType") != "UPGRADE" or not location:
        return _unsafe(where, f"the last savepoint is of trigger type "
                       f"{last.get('triggerType') or 'none'}, not UPGRADE (periodic savepoint, "
                       "or the last checkpoint of a terminated job)")
    if location == before:
        return _unsafe(where, f"the last savepoint {location} is the one from before the "
                       "suspend (last-state fallback)")
    if path is not None and path != location:
        return _unsafe(where, f"upgradeSavepointPath {path or 'empty'} differs from the "
                       f"last UPGRADE savepoint {location}")
    return SavepointResult(SavepointState.COMPLETED, location=location)


def _unsafe(where: str, why: str) -> SavepointResult:
    return SavepointResult(SavepointState.FAILED, error=f"{where}: the operator suspended the "
                           f"job without a savepoint of this suspend: {why}; the cycle is "
                           "not safe")


def legacy_manual_result(obj: dict[str, Any], nonce: int, where: str) -> SavepointResult:
    """A manual savepoint through ``spec.job.savepointTriggerNonce`` (legacy mode).

    Completion: ``lastSavepoint.triggerNonce`` is our nonce. Failure leaves no field
    of its own (1.9-1.13 emit a ``SavepointError`` Event and reset the trigger): once
    the operator has reconciled our nonce (``lastReconciledSpec``) with no trigger
    pending and no savepoint carrying it, it gave up.
    """
    import json

    last = last_savepoint(obj)
    if last.get("triggerNonce") == nonce and last.get("location"):
        return SavepointResult(SavepointState.COMPLETED, location=str(last["location"]))
    info = job_status(obj).get("savepointInfo") or {}
    reconciled = (obj.get("status") or {}).get("reconciliationStatus") or {}
    try:
        spec = json.loads(reconciled.get("lastReconciledSpec") or "{}")
    except ValueError:
        spec = {}
    done_nonce = ((spec.get("job") or {}) if isinstance(spec, dict) else {}).get(
        "savepointTriggerNonce")
    if done_nonce == nonce and not info.get("triggerId"):
        return SavepointResult(SavepointState.FAILED, error=f"{where}: the operator gave up "
                               f"on savepoint nonce {nonce} (see the resource's SavepointError "
                               "events)")
    return SavepointResult(SavepointState.PENDING)
