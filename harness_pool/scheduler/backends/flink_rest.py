"""Flink REST API backend for a session cluster (tested against a real local cluster).

Endpoints used: ``/jobs`` (states: fresher than ``/jobs/{id}``, which is cached),
``/jobs/overview``, ``/jobs/{id}`` (PATCH cancel), ``/jobs/{id}/stop`` and
``/jobs/{id}/savepoints`` (with our ``triggerId``, which Flink de-duplicates, so
re-issuing after a restart never takes a second savepoint),
``/jobs/{id}/savepoints/{trigger}``, ``/jobs/{id}/checkpoints`` (the savepoint a
job restored from: ``latest.restored.external_path``), ``/jars``,
``/jars/upload``, ``/jars/{jar}/run`` (with our ``jobId``: Flink refuses a
second job with that id, so a re-sent submission cannot start a second copy),
``/overview``, ``/savepoint-disposal``. PyFlink jobs run through
``org.apache.flink.client.python.PythonDriver`` from the uploaded flink-python jar.

Every answer passes ``backends._boundary``: transport errors, 5xx and garbled
answers (HTML with 200, truncated bodies, missing fields) are temporary, 4xx
permanent, with Flink's own message. A refusal of ``/jars/{jar}/run`` that names
``DuplicateJobSubmissionException`` is reported as "already submitted".
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import requests

from harness_pool._errors import PermanentError, TemporaryError
from harness_pool.scheduler.backends._boundary import HttpApi, NotFound, dig, status_error
from harness_pool.scheduler.backends.base import DisposalResult, SavepointResult, SubmitResult
from harness_pool.scheduler.config import BackendConfig, JobSpec
from harness_pool.scheduler.events import DisposalState, SavepointState
from harness_pool.scheduler.model import ACTIVE, JobStatus

log = logging.getLogger(__name__)

PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"
SLOW_CALL = 120.0
"""Bound of the calls that legitimately take long: uploading the flink-python jar (tens of
MB) and ``/jars/{id}/run``, which runs the Python program inside the JobManager."""
DUPLICATE_MARKERS = ("DuplicateJobSubmissionException", "already been submitted")


def default_python_jar() -> str:
    from harness_pool.flink.local_cluster import pyflink_home

    jars = sorted((pyflink_home() / "opt").glob("flink-python*.jar"))
    if not jars:
        raise PermanentError("no flink-python jar in the apache-flink package; set "
                             "backend.python_jar")
    return str(jars[0])


def _flink_detail(body: Any) -> str:
    """Flink's error document: ``{"errors": ["message", "stack trace", ...]}``."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return str(body)[:300]
    texts = [str(e) for e in errors if str(e).strip() not in ("", "Internal server error.")]
    return _first_cause(texts[0] if texts else str(errors[0]))


class FlinkRestBackend:
    def __init__(self, cfg: BackendConfig, savepoint_dir: str = "",
                 session: requests.Session | None = None) -> None:
        self.api = HttpApi(cfg.url, "Flink REST", cfg.request_timeout, session,
                           detail=_flink_detail)
        self.url = self.api.base
        self.timeout = cfg.request_timeout
        self.python_jar = cfg.python_jar
        self.savepoint_dir = savepoint_dir
        self._jar_ids: dict[str, str] = {}

    def _get(self, path: str, what: str) -> Any:
        return self.api.call("GET", path, what).body

    def _state(self, value: Any, what: str) -> JobStatus:
        try:
            return JobStatus.parse(value)
        except ValueError as exc:
            raise TemporaryError(f"{what}: {exc}") from exc

    # -- JobBackend ------------------------------------------------------------------

    def find_running(self, job: JobSpec) -> list[str]:
        what = f"list jobs (looking for {job.flink_name})"
        jobs = dig(self._get("/jobs/overview", what), "jobs", what=what)
        return sorted(str(dig(j, "jid", what=what)) for j in jobs
                      if dig(j, "name", what=what) == job.flink_name
                      and self._state(dig(j, "state", what=what), what) in ACTIVE)

    def job_state(self, job: JobSpec, job_id: str) -> JobStatus | None:
        # GET /jobs answers from the dispatcher; GET /jobs/{id} goes through the web
        # ExecutionGraph cache (web.refresh-interval, 3 s by default) and lags behind.
        what = f"state of job {job.name} ({job_id})"
        for entry in dig(self._get("/jobs", what), "jobs", what=what):
            if dig(entry, "id", what=what) == job_id:
                return self._state(dig(entry, "status", what=what), what)
        return None

    def stop_with_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                            target_dir: str) -> None:
        body: dict[str, Any] = {"drain": False, "triggerId": trigger_id}
        if target_dir or self.savepoint_dir:
            body["targetDirectory"] = target_dir or self.savepoint_dir
        self.api.call("POST", f"/jobs/{job_id}/stop", f"stop job {job.name} ({job_id})",
                      json=body)

    def trigger_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                          target_dir: str) -> None:
        body: dict[str, Any] = {"cancel-job": False, "triggerId": trigger_id}
        if target_dir or self.savepoint_dir:
            body["target-directory"] = target_dir or self.savepoint_dir
        self.api.call("POST", f"/jobs/{job_id}/savepoints",
                      f"savepoint of {job.name} ({job_id})", json=body)

    def savepoint_status(self, job: JobSpec, job_id: str, trigger_id: str,
                         stop: bool) -> SavepointResult:
        what = f"savepoint {trigger_id} of {job.name}"
        answer = self.api.call("GET", f"/jobs/{job_id}/savepoints/{trigger_id}", what,
                               allow=(404,))
        if answer.status == 404:
            return self._savepoint_from_stats(job, job_id, trigger_id)
        if dig(answer.body, "status", "id", what=what) != "COMPLETED":
            return SavepointResult(SavepointState.PENDING)
        operation = answer.body.get("operation") or {}
        if operation.get("location"):
            return SavepointResult(SavepointState.COMPLETED, location=operation["location"])
        cause = operation.get("failure-cause") or {}
        text = str(cause.get("stack-trace") or cause.get("class") or cause)
        return SavepointResult(SavepointState.FAILED, error=_first_cause(text))

    def _savepoint_from_stats(self, job: JobSpec, job_id: str, trigger_id: str
                              ) -> SavepointResult:
        """The trigger is no longer known (JobManager forgot it, ``rest.async.store-duration``):
        a job that stopped with a savepoint still names it in its checkpoint statistics."""
        what = f"checkpoint statistics of {job.name} ({job_id})"
        stats = self.api.call("GET", f"/jobs/{job_id}/checkpoints", what, allow=(404,)).body
        latest = ((stats or {}).get("latest") or {}).get("savepoint") or {}
        if self.job_state(job, job_id) is JobStatus.FINISHED and latest.get("external_path"):
            log.warning("trigger %s of %s is gone; using the savepoint the stopped job reports: "
                        "%s", trigger_id, job.name, latest["external_path"])
            return SavepointResult(SavepointState.COMPLETED,
                                   location=str(latest["external_path"]))
        raise PermanentError(f"savepoint {trigger_id} of {job.name} ({job_id}): unknown to "
                             "Flink, and the job reports no savepoint it stopped with")

    def revert_stop(self, job: JobSpec, job_id: str, trigger_id: str) -> None:
        """Nothing to do: Flink keeps a job running when its stop-with-savepoint fails."""

    def submit(self, job: JobSpec, job_id: str, savepoint: str | None,
               parallelism: int | None) -> SubmitResult:
        jar = job.jar or self.python_jar or default_python_jar()
        body: dict[str, Any] = {
            "entryClass": job.entry_class or PYTHON_DRIVER,
            "programArgsList": (["-py", job.python] if job.python else []) + list(job.args),
            "allowNonRestoredState": job.allow_non_restored_state,
            "jobId": job_id,
        }
        if parallelism:
            body["parallelism"] = parallelism
        if savepoint:
            body["savepointPath"] = savepoint
        jar_id = self._jar_id(jar)
        what = f"run job {job.name} ({job_id})"
        answer = self.api.call("POST", f"/jars/{jar_id}/run", what, json=body,
                               allow=(400, 409, 500), timeout=max(self.timeout, SLOW_CALL))
        if answer.status >= 400:
            if any(marker in answer.text for marker in DUPLICATE_MARKERS):
                return SubmitResult(job_id, already=True)
            raise status_error(answer.status, what, _flink_detail(answer.body) or answer.text)
        return SubmitResult(job_id)

    def restored_from(self, job: JobSpec, job_id: str) -> str | None:
        what = f"checkpoint statistics of {job.name} ({job_id})"
        stats = self._get(f"/jobs/{job_id}/checkpoints", what)
        restored = ((stats or {}).get("latest") or {}).get("restored") or {}
        path = restored.get("external_path")
        return str(path) if path else None

    def cancel(self, job: JobSpec, job_id: str) -> None:
        self.api.call("PATCH", f"/jobs/{job_id}?mode=cancel", f"cancel {job.name} ({job_id})")

    def free_slots(self) -> int:
        """Slots not claimed by any live job: total slots minus each live job's need.

        ``slots-available`` of ``/overview`` lags behind a job that just stopped (the
        TaskManager frees its slots a moment later), so a rescale right after a stop
        would see too few; a job's need (its largest vertex parallelism, with Flink's
        default slot sharing) is known at once.
        """
        total = int(dig(self._get("/overview", "cluster overview"), "slots-total",
                        what="cluster overview"))
        used = 0
        for j in dig(self._get("/jobs", "job list"), "jobs", what="job list"):
            if self._state(dig(j, "status", what="job list"), "job list").terminal:
                continue
            what = f"job {j['id']}"
            vertices = dig(self._get(f"/jobs/{j['id']}", what), "vertices", what=what)
            used += max((int(v["parallelism"]) for v in vertices), default=0)
        return max(0, total - used)

    def dispose(self, path: str, ref: str, timeout: float = 60.0) -> DisposalResult:
        what = f"dispose {path}"
        trigger = dig(self.api.call("POST", "/savepoint-disposal", what,
                                    json={"savepoint-path": path}).body, "request-id", what=what)
        deadline = time.monotonic() + timeout
        delay = 0.1
        while time.monotonic() < deadline:
            status = self._get(f"/savepoint-disposal/{trigger}", what)
            if dig(status, "status", "id", what=what) == "COMPLETED":
                cause = (status.get("operation") or {}).get("failure-cause")
                if cause:
                    text = _first_cause(str(cause.get("stack-trace") or cause))
                    if "FileNotFoundException" in text or "does not exist" in text:
                        return DisposalResult(DisposalState.DONE, "already gone")
                    return DisposalResult(DisposalState.FAILED, text)
                return DisposalResult(DisposalState.DONE)
            time.sleep(delay)
            delay = min(1.0, delay * 1.5)
        return DisposalResult(DisposalState.PENDING, f"not done after {timeout:.0f} s")

    # -- jars --------------------------------------------------------------------------

    def _jar_id(self, jar: str) -> str:
        """Id of ``jar`` on the cluster: ours from before, one already there by name, or upload."""
        path = Path(jar)
        listed = self._get("/jars", "list jars").get("files") or []
        known = self._jar_ids.get(jar)
        if known and any(f.get("id") == known for f in listed):
            return known
        same_name = [f["id"] for f in listed if f.get("name") == path.name and f.get("id")]
        if same_name:
            self._jar_ids[jar] = same_name[0]
            return str(same_name[0])
        try:
            with path.open("rb") as handle:
                data = self.api.call("POST", "/jars/upload", f"upload {path.name}",
                                     files={"jarfile": (path.name, handle,
                                                        "application/x-java-archive")},
                                     timeout=max(self.timeout, SLOW_CALL)).body
        except OSError as exc:
            raise PermanentError(f"cannot read jar {jar}: {exc.strerror}") from exc
        jar_id = str(dig(data, "filename", what=f"upload {path.name}")).rsplit("/", 1)[-1]
        self._jar_ids[jar] = jar_id
        log.info("uploaded %s as %s", path.name, jar_id)
        return jar_id


def _first_cause(text: str) -> str:
    """The innermost 'Caused by' line of a Java stack trace (what an operator needs)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    caused = [ln for ln in lines if ln.startswith("Caused by:")]
    line = caused[-1].removeprefix("Caused by: ") if caused else (lines[0] if lines else text)
    return line[:400]


__all__ = ["FlinkRestBackend", "NotFound", "default_python_jar"]
