"""Flink REST API backend for a session cluster (tested against a real local cluster).

Endpoints used: ``/jobs`` (states: fresher than ``/jobs/{id}``, which is cached),
``/jobs/overview``, ``/jobs/{id}`` (PATCH cancel),
``/jobs/{id}/stop`` and ``/jobs/{id}/savepoints`` (with our ``triggerId``, which
Flink de-duplicates, so re-issuing after a restart never takes a second
savepoint), ``/jobs/{id}/savepoints/{trigger}``, ``/jars/upload``,
``/jars/{jar}/run`` (with our ``jobId``, so a re-issued submission cannot start
a second copy), ``/overview``, ``/savepoint-disposal``. PyFlink jobs run through
``org.apache.flink.client.python.PythonDriver`` from the uploaded flink-python jar.

All HTTP errors are translated here: connection problems and 5xx become
``TemporaryError``, 4xx ``PermanentError`` with Flink's own message.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import requests

from harness_pool._errors import PermanentError, TemporaryError
from harness_pool.scheduler.backends.base import SavepointResult, SubmitResult
from harness_pool.scheduler.config import BackendConfig, JobSpec

_TERMINAL_JOB_STATES = frozenset({"FINISHED", "FAILED", "CANCELED", "SUSPENDED"})

log = logging.getLogger(__name__)

PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"
ACTIVE = ("INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "FAILING", "CANCELLING",
          "RECONCILING", "SUSPENDED")


def default_python_jar() -> str:
    from harness_pool.flink.local_cluster import pyflink_home

    jars = sorted((pyflink_home() / "opt").glob("flink-python*.jar"))
    if not jars:
        raise PermanentError("no flink-python jar in the apache-flink package; set "
                             "backend.python_jar")
    return str(jars[0])


class FlinkRestBackend:
    def __init__(self, cfg: BackendConfig, savepoint_dir: str = "",
                 session: requests.Session | None = None) -> None:
        self.url = cfg.url.rstrip("/")
        self.timeout = cfg.request_timeout
        self.python_jar = cfg.python_jar
        self.savepoint_dir = savepoint_dir
        self.http = session or requests.Session()
        self._jar_ids: dict[str, str] = {}

    # -- HTTP boundary ---------------------------------------------------------------

    def _call(self, method: str, path: str, what: str, ok_404: bool = False,
              **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise TemporaryError(f"{what}: Flink REST at {self.url} unreachable: "
                                 f"{type(exc).__name__}") from exc
        if response.status_code == 404 and ok_404:
            return None
        if response.status_code >= 400:
            try:
                errors = response.json().get("errors", [])
                detail = str(errors[0]).strip().splitlines()[0] if errors else response.text
            except ValueError:
                detail = response.text[:200]
            error_cls = TemporaryError if response.status_code >= 500 else PermanentError
            if response.status_code == 404:
                detail = f"not found ({detail[:200]})"
            raise error_cls(f"{what}: HTTP {response.status_code}: {detail[:300]}")
        return response.json() if response.content else {}

    # -- JobBackend ------------------------------------------------------------------

    def find_running(self, job: JobSpec) -> list[str]:
        overview = self._call("GET", "/jobs/overview", "list jobs")
        return sorted(j["jid"] for j in overview.get("jobs", [])
                      if j.get("name") == job.flink_name and j.get("state") in ACTIVE)

    def job_state(self, job: JobSpec, job_id: str) -> str | None:
        # GET /jobs answers from the dispatcher; GET /jobs/{id} goes through the web
        # ExecutionGraph cache (web.refresh-interval, 3 s by default) and lags behind.
        data = self._call("GET", "/jobs", f"state of job {job.name} ({job_id})")
        for entry in data.get("jobs", []):
            if entry.get("id") == job_id:
                return str(entry["status"])
        return None

    def stop_with_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                            target_dir: str) -> None:
        body: dict[str, Any] = {"drain": False, "triggerId": trigger_id}
        if target_dir or self.savepoint_dir:
            body["targetDirectory"] = target_dir or self.savepoint_dir
        self._call("POST", f"/jobs/{job_id}/stop", f"stop job {job.name} ({job_id})", json=body)

    def trigger_savepoint(self, job: JobSpec, job_id: str, trigger_id: str,
                          target_dir: str) -> None:
        body: dict[str, Any] = {"cancel-job": False, "triggerId": trigger_id}
        if target_dir or self.savepoint_dir:
            body["target-directory"] = target_dir or self.savepoint_dir
        self._call("POST", f"/jobs/{job_id}/savepoints", f"savepoint of {job.name} ({job_id})",
                   json=body)

    def savepoint_status(self, job: JobSpec, job_id: str, trigger_id: str) -> SavepointResult:
        data = self._call("GET", f"/jobs/{job_id}/savepoints/{trigger_id}",
                          f"savepoint {trigger_id} of {job.name}", ok_404=True)
        if data is None:
            return self._savepoint_from_stats(job, job_id, trigger_id)
        if data["status"]["id"] != "COMPLETED":
            return SavepointResult("IN_PROGRESS")
        operation = data.get("operation") or {}
        if operation.get("location"):
            return SavepointResult("COMPLETED", location=operation["location"])
        cause = operation.get("failure-cause") or {}
        text = str(cause.get("stack-trace") or cause.get("class") or cause)
        return SavepointResult("FAILED", error=_first_cause(text))

    def _savepoint_from_stats(self, job: JobSpec, job_id: str, trigger_id: str
                              ) -> SavepointResult:
        """The trigger is no longer known (JobManager forgot it, ``rest.async.store-duration``):
        a job that stopped with a savepoint still names it in its checkpoint statistics."""
        stats = self._call("GET", f"/jobs/{job_id}/checkpoints",
                           f"checkpoint statistics of {job.name} ({job_id})", ok_404=True)
        latest = ((stats or {}).get("latest") or {}).get("savepoint") or {}
        if self.job_state(job, job_id) == "FINISHED" and latest.get("external_path"):
            log.warning("trigger %s of %s is gone; using the savepoint the stopped job reports: "
                        "%s", trigger_id, job.name, latest["external_path"])
            return SavepointResult("COMPLETED", location=str(latest["external_path"]))
        raise PermanentError(f"savepoint {trigger_id} of {job.name} ({job_id}): unknown to "
                             "Flink, and the job reports no savepoint it stopped with")

    def submit(self, job: JobSpec, job_id: str, savepoint: str | None,
               parallelism: int | None) -> SubmitResult:
        if self.job_state(job, job_id) is not None:
            log.info("job %s already submitted as %s; not submitting again", job.name, job_id)
            return SubmitResult(job_id)
        others = self.find_running(job)
        if others:
            return SubmitResult(job_id, duplicates=tuple(others))
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
        self._call("POST", f"/jars/{jar_id}/run", f"run job {job.name}", json=body)
        return SubmitResult(job_id)

    def cancel(self, job: JobSpec, job_id: str) -> None:
        self._call("PATCH", f"/jobs/{job_id}?mode=cancel", f"cancel {job.name} ({job_id})")

    def free_slots(self) -> int:
        """Slots not claimed by any live job: total slots minus each live job's need.

        ``slots-available`` of ``/overview`` lags behind a job that just stopped (the
        TaskManager frees its slots a moment later), so a rescale right after a stop
        would see too few; a job's need (its largest vertex parallelism, with Flink's
        default slot sharing) is known at once.
        """
        total = int(self._call("GET", "/overview", "cluster overview")["slots-total"])
        jobs = self._call("GET", "/jobs", "job list")["jobs"]  # states without the web cache
        used = 0
        for j in jobs:
            if j["status"] in _TERMINAL_JOB_STATES:
                continue
            detail = self._call("GET", f"/jobs/{j['id']}", f"job {j['id']}")
            used += max((v["parallelism"] for v in detail.get("vertices", [])), default=0)
        return max(0, total - used)

    def dispose(self, path: str, timeout: float = 60.0) -> None:
        data = self._call("POST", "/savepoint-disposal", f"dispose {path}",
                          json={"savepoint-path": path})
        trigger = data["request-id"]
        deadline = time.monotonic() + timeout
        delay = 0.1
        while time.monotonic() < deadline:
            status = self._call("GET", f"/savepoint-disposal/{trigger}", f"dispose {path}")
            if status["status"]["id"] == "COMPLETED":
                cause = (status.get("operation") or {}).get("failure-cause")
                if cause:
                    raise PermanentError(f"dispose {path}: {_first_cause(str(cause))}")
                return
            time.sleep(delay)
            delay = min(1.0, delay * 1.5)
        raise TemporaryError(f"dispose {path}: not done after {timeout:.0f} s")

    # -- jars --------------------------------------------------------------------------

    def _jar_id(self, jar: str) -> str:
        """Id of ``jar`` on the cluster: ours from before, one already there by name, or upload."""
        path = Path(jar)
        listed = self._call("GET", "/jars", "list jars").get("files", [])
        known = self._jar_ids.get(jar)
        if known and any(f.get("id") == known for f in listed):
            return known
        same_name = [f["id"] for f in listed if f.get("name") == path.name]
        if same_name:
            self._jar_ids[jar] = same_name[0]
            return same_name[0]
        try:
            with path.open("rb") as handle:
                data = self._call("POST", "/jars/upload", f"upload {path.name}",
                                  files={"jarfile": (path.name, handle,
                                                     "application/x-java-archive")})
        except OSError as exc:
            raise PermanentError(f"cannot read jar {jar}: {exc.strerror}") from exc
        jar_id = str(data["filename"]).rsplit("/", 1)[-1]
        self._jar_ids[jar] = jar_id
        log.info("uploaded %s as %s", path.name, jar_id)
        return jar_id


def _first_cause(text: str) -> str:
    """The innermost 'Caused by' line of a Java stack trace (what an operator needs)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    caused = [ln for ln in lines if ln.startswith("Caused by:")]
    line = caused[-1].removeprefix("Caused by: ") if caused else (lines[0] if lines else text)
    return line[:400]
