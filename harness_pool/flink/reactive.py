"""A local Flink application cluster in reactive mode, whose TaskManager "pods" come and go.

The JobManager is Flink's standalone application entry point
(``standalone-job.sh start-foreground``) running one PyFlink job through
Flink's ``PythonDriver`` (``-py job.py``), with ``scheduler-mode: reactive``:
the job always runs at the parallelism of all the slots it has. ``add_pod()``
starts a TaskManager with its own harness-pool sidecar (see ``pod``), and the
job scales up; ``remove_pod()`` takes one away by SIGTERM or SIGKILL, and the
job scales down, restoring from its latest checkpoint.

The configuration makes a local rescale take seconds instead of a minute:
``ReactiveSettings`` says why each value is what it is.

Invariants:

- Everything lives under ``workdir``: the cluster's ``conf``, ``lib``, ``log``,
  ``pid``, checkpoints, savepoints, and one folder per pod
  (``pods/<name>/{conf,log,pid,tmp}``). Ports are free ports (REST, RPC, blob,
  sidecars) or 0 (TaskManager RPC and data).
- ``stop()`` reaps every process this object started (pods first, TaskManager
  before sidecar, then the JobManager), even after a failed ``start()`` or a
  failed pod; it is idempotent. ``collect_logs()`` copies every log folder.

Threads: one caller thread drives a cluster; nothing here starts threads.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from harness_pool._errors import PermanentError, TemporaryError
from harness_pool.flink.distribution import (
    PYTHON_DRIVER,
    ChildProcess,
    copy_conf_dir,
    default_config,
    flink_env,
    free_port,
    link_lib_dir,
    pyflink_home,
    write_config,
)
from harness_pool.flink.jobview import JobScale, JobStatus, job_scale
from harness_pool.flink.pod import Pod, PodPhase, PythonWorkers, Removal

log = logging.getLogger(__name__)

#: What flink-python 2.3 logs when a rescale's task cancellation races with the close of
#: a slot's shared Python resources (docs/reactive.md); it can kill the TaskManager.
REFCOUNT_RACE = "Reference count must not be negative"

# Flink 2.3's adaptive-scheduler timeline logs whole rescale objects at INFO and WARN
# on every state change; its REST endpoints (/jobs/:id/rescales/...) carry the same.
_QUIET_TIMELINE = """
logger.hp_timeline.name = org.apache.flink.runtime.scheduler.adaptive.timeline
logger.hp_timeline.level = ERROR
"""


@dataclasses.dataclass(frozen=True)
class ReactiveSettings:
    """How the local reactive cluster is configured; each default says why."""

    job: Path
    """The PyFlink script the JobManager runs (``PythonDriver -py``)."""

    job_args: tuple[str, ...] = ()
    """Arguments after the script."""

    slots_per_pod: int = 2
    """Slots of each TaskManager; its sidecar keeps as many warm workers."""

    python: PythonWorkers = PythonWorkers.POOL
    """Who runs the Python stages (the same for every pod of a cluster)."""

    checkpoint_interval: str = "1 s"
    """Reactive mode restores from the latest checkpoint on every rescale, and Flink 2
    rescales up on a completed checkpoint: a short interval makes both quick."""

    cooldown: str = "1 s"
    """``...executing.cooldown-after-rescaling`` (Flink's default 30 s): how long after a
    rescale the scheduler ignores new resources."""

    stabilization: str = "1 s"
    """``...executing.resource-stabilization-timeout`` (default 60 s): how long the
    scheduler waits for more resources before it rescales."""

    heartbeat_interval: str = "2 s"
    heartbeat_timeout: str = "10 s"
    """A SIGKILLed TaskManager is declared lost after this (Flink's default 50 s); long
    enough that a loaded 2-core machine does not lose a live one."""

    restart_delay: str = "1 s"
    """Fixed-delay restarts: a lost TaskManager is a failure, retried after this."""

    restart_attempts: int = 1000
    """Every SIGKILL costs one attempt; the job must outlive many of them."""

    jobmanager_memory: str = "1024m"
    taskmanager_memory: str = "1280m"
    """Enough for 2 slots of PyFlink (managed memory for process mode included)."""

    start_timeout: float = 180.0
    """Bound on each wait: a JobManager or TaskManager coming up, a job reaching a scale."""

    restart_taskmanagers: bool = True
    """A TaskManager that dies on its own is restarted in place while the cluster waits
    for a scale, as a Deployment's pod restarts its container (restartPolicy: Always).
    Flink 2.3's flink-python can kill a TaskManager at a rescale (docs/reactive.md: the
    refcount race); each restart is recorded in ``ReactiveCluster.incidents``."""

    conf: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Extra Flink configuration, applied last."""

    def validate(self) -> ReactiveSettings:
        problems = []
        if not self.job.is_file():
            problems.append(f"job: {self.job} is not a file")
        if self.slots_per_pod < 1:
            problems.append(f"slots_per_pod: {self.slots_per_pod}; expected 1 or more")
        if self.start_timeout <= 0:
            problems.append(f"start_timeout: {self.start_timeout}; expected seconds > 0")
        if problems:
            from harness_pool._errors import ConfigError

            raise ConfigError(problems)
        return self


class ReactiveCluster:
    """One JobManager running one job in reactive mode, and its pods."""

    def __init__(self, workdir: Path, settings: ReactiveSettings) -> None:
        self.settings = settings.validate()
        self.workdir = Path(workdir).resolve()
        self.home = pyflink_home()
        self.conf_dir = self.workdir / "conf"
        self.lib_dir = self.workdir / "lib"
        self.log_dir = self.workdir / "log"
        self.pid_dir = self.workdir / "pid"
        self.checkpoint_dir = self.workdir / "checkpoints"
        self.savepoint_dir = self.workdir / "savepoints"
        self.rest_port = 0
        self.conf: dict[str, object] = {}
        self.jobmanager: ChildProcess | None = None
        self.pods: dict[str, Pod] = {}
        self._seq = 0
        self._job_id = ""
        self.incidents: list[str] = []  # TaskManagers that died on their own, and why

    # -- public face -----------------------------------------------------------

    @property
    def rest_url(self) -> str:
        if not self.rest_port:
            raise PermanentError("the reactive cluster has not been started")
        return f"http://127.0.0.1:{self.rest_port}"

    def __enter__(self) -> ReactiveCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, pods: int = 1) -> None:
        """Starts the JobManager (it submits the job itself) and ``pods`` pods; waits until
        the job runs on all of their slots."""
        try:
            self._prepare()
            env = self._env()
            self.jobmanager = ChildProcess(
                "reactive JobManager",
                [str(self.home / "bin" / "standalone-job.sh"), "start-foreground",
                 "--job-classname", PYTHON_DRIVER, "-py", str(self.settings.job.resolve()),
                 *self.settings.job_args],
                env, self.log_dir / "jobmanager.stdout", self.workdir)
            self._wait_rest(time.monotonic() + self.settings.start_timeout)
            for _ in range(pods):
                self.add_pod()
            if pods:
                self.wait_parallelism(pods * self.settings.slots_per_pod)
        except BaseException:
            self.stop()
            raise

    def add_pod(self) -> Pod:
        """Starts a pod (sidecar ready first, then the TaskManager); returns once the
        TaskManager has registered its slots. The job rescales on its own."""
        self._seq += 1
        name = f"pod-{self._seq}"
        pod = Pod(name, self.workdir / "pods" / name, self.settings.slots_per_pod,
                  self.settings.python)
        self.pods[name] = pod
        env = self._env()
        deadline = time.monotonic() + self.settings.start_timeout
        pod.start_sidecar(env, self.settings.start_timeout)
        pod.start_taskmanager(self.home / "bin" / "taskmanager.sh", env, self.conf,
                              self.conf_dir)
        self._wait_registered(pod, deadline)
        pod.registered()
        log.info("pod %s joined: TaskManager registered %.1f s after its start%s; %d pods "
                 "running, the job rescales to %d", name,
                 pod.registered_wall - pod.taskmanager_started_wall,
                 f", sidecar {pod.sidecar_address}" if pod.sidecar is not None else "",
                 len(self.live_pods()), len(self.live_pods()) * self.settings.slots_per_pod)
        return pod

    def remove_pod(self, name: str, how: Removal = Removal.SIGTERM,
                   stop_sidecar: bool = True) -> Pod:
        """Ends pod ``name``'s TaskManager by ``how``; then its sidecar, unless told to keep
        it (to look at how it recycles its workers; call ``pod.stop()`` after)."""
        pod = self.pods[name]
        pod.remove_taskmanager(how)
        if stop_sidecar:
            pod.stop()
        log.info("pod %s left by %s (TaskManager exit %s); %d pods running, the job "
                 "rescales to %d%s", name, how.value, pod.taskmanager_exit,
                 len(self.live_pods()), len(self.live_pods()) * self.settings.slots_per_pod,
                 "" if stop_sidecar else "; its sidecar still runs")
        return pod

    def live_pods(self) -> list[Pod]:
        return [p for p in self.pods.values() if p.phase is PodPhase.RUNNING]

    def stop(self) -> None:
        """Stops every pod (TaskManager, then sidecar), then the JobManager; reaps all."""
        errors: list[BaseException] = []
        for pod in list(self.pods.values()):
            try:
                pod.stop()
            except Exception as exc:  # one pod's failure must not leak the others
                log.exception("stopping pod %s failed", pod.name)
                errors.append(exc)
        if self.jobmanager is not None:
            self.jobmanager.stop(grace=20.0)
        if errors:
            raise PermanentError(f"stopping the reactive cluster: {errors[0]}") from errors[0]

    def survivors(self) -> list[int]:
        """Processes this cluster started that are still alive (none after ``stop()``)."""
        procs = [] if self.jobmanager is None else self.jobmanager.survivors()
        return procs + [pid for pod in self.pods.values() for pid in pod.survivors()]

    def collect_logs(self, target: Path) -> None:
        """Copies the JobManager's and every pod's logs (and sidecar logs) to ``target``."""
        target.mkdir(parents=True, exist_ok=True)
        if self.log_dir.exists():
            shutil.copytree(self.log_dir, target / "jobmanager", dirs_exist_ok=True)
        for pod in self.pods.values():
            if pod.log_dir.exists():
                shutil.copytree(pod.log_dir, target / pod.name, dirs_exist_ok=True)

    # -- the job -----------------------------------------------------------------

    def job_id(self, timeout: float = 60.0) -> str:
        """The id of the application's one job (waits until the JobManager knows it)."""
        deadline = time.monotonic() + timeout
        while not self._job_id:
            jobs = self.get("/jobs/overview").get("jobs", [])
            if jobs:
                self._job_id = str(jobs[0]["jid"])
            elif time.monotonic() > deadline:
                raise TemporaryError(f"no job on {self.rest_url} after {timeout:.0f} s")
            else:
                time.sleep(0.2)
        return self._job_id

    def scale(self) -> JobScale:
        return job_scale(self.get(f"/jobs/{self.job_id()}"))

    def wait_parallelism(self, parallelism: int, timeout: float | None = None) -> JobScale:
        """Waits until the job RUNS with every vertex at ``parallelism``; returns that view."""
        timeout = self.settings.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last: JobScale | None = None
        while time.monotonic() < deadline:
            self._check_jobmanager()
            self._restart_dead_taskmanagers(deadline)
            last = self.scale()
            if last.at(parallelism):
                log.info("job at parallelism %d: %s", parallelism, last.describe())
                return last
            if last.status.terminal:
                raise PermanentError(f"the job ended while waiting for parallelism "
                                     f"{parallelism}: {last.describe()}")
            time.sleep(0.2)
        raise TemporaryError(f"job not at parallelism {parallelism} after {timeout:.0f} s: "
                             f"{last.describe() if last else 'no answer'}")

    def _restart_dead_taskmanagers(self, deadline: float) -> None:
        for pod in self.live_pods():
            if not pod.taskmanager_died():
                continue
            race = pod.log_mentions(REFCOUNT_RACE)
            incident = (f"pod {pod.name}: TaskManager exited with "
                        f"{pod.taskmanager.returncode if pod.taskmanager else None} on its own"
                        + ("; its log shows flink-python's refcount race at a rescale "
                           f"({REFCOUNT_RACE!r}, docs/reactive.md)" if race else ""))
            if not self.settings.restart_taskmanagers:
                raise PermanentError(incident)
            log.warning("%s; restarting it beside the same sidecar", incident)
            self.incidents.append(incident)
            pod.restart_taskmanager()
            self._wait_registered(pod, deadline)
            pod.registered()

    def get(self, path: str) -> dict[str, Any]:
        try:
            response = requests.get(f"{self.rest_url}{path}", timeout=10)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise TemporaryError(f"GET {self.rest_url}{path}: {exc}") from exc
        body = response.json()
        return body if isinstance(body, dict) else {"items": body}

    def cancel_job(self, timeout: float = 60.0) -> JobStatus:
        """Cancels the job and waits for a terminal state (the JobManager then exits)."""
        job = self.job_id()
        try:
            requests.patch(f"{self.rest_url}/jobs/{job}", timeout=10)
        except requests.RequestException as exc:
            raise TemporaryError(f"cancel {job}: {exc}") from exc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = self.scale().status
            except TemporaryError:
                return JobStatus.CANCELED  # the application cluster shut down after it
            if status.terminal:
                return status
            time.sleep(0.2)
        raise TemporaryError(f"job {job} not canceled after {timeout:.0f} s")

    # -- internals ---------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return flink_env(self.home, self.conf_dir, self.lib_dir, self.log_dir, self.pid_dir)

    def _prepare(self) -> None:
        for folder in (self.log_dir, self.pid_dir, self.checkpoint_dir, self.savepoint_dir,
                       self.workdir / "tmp", self.workdir / "uploads"):
            folder.mkdir(parents=True, exist_ok=True)
        copy_conf_dir(self.home, self.conf_dir)
        link_lib_dir(self.home, self.lib_dir)
        s = self.settings
        from harness_pool import boot

        python = boot.executable() if s.python is PythonWorkers.POOL else sys.executable
        self.rest_port = free_port()
        conf = default_config(self.home)
        conf.update({
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": free_port(),
            "jobmanager.memory.process.size": s.jobmanager_memory,
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "taskmanager.memory.process.size": s.taskmanager_memory,
            "taskmanager.numberOfTaskSlots": s.slots_per_pod,
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.rest_port,
            "blob.server.port": free_port(),
            "scheduler-mode": "reactive",
            "jobmanager.adaptive-scheduler.executing.cooldown-after-rescaling": s.cooldown,
            "jobmanager.adaptive-scheduler.executing.resource-stabilization-timeout":
                s.stabilization,
            "execution.checkpointing.interval": s.checkpoint_interval,
            "execution.checkpointing.dir": self.checkpoint_dir.as_uri(),
            "state.savepoints.dir": self.savepoint_dir.as_uri(),
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": s.restart_attempts,
            "restart-strategy.fixed-delay.delay": s.restart_delay,
            "heartbeat.interval": s.heartbeat_interval,
            "heartbeat.timeout": s.heartbeat_timeout,
            "web.refresh-interval": "1 s",
            "web.adaptive-scheduler.rescale-history.size": 100,
            "python.executable": python,
            "python.client.executable": sys.executable,
            "web.upload.dir": str(self.workdir / "uploads"),
            "io.tmp.dirs": str(self.workdir / "tmp"),
            "env.pid.dir": str(self.pid_dir),
        })
        conf.update(s.conf)
        self.conf = conf
        write_config(self.conf_dir, conf)
        with open(self.conf_dir / "log4j-console.properties", "a") as props:
            props.write(_QUIET_TIMELINE)

    def _check_jobmanager(self) -> None:
        if self.jobmanager is not None and not self.jobmanager.alive():
            raise PermanentError(f"the JobManager exited with {self.jobmanager.returncode}; "
                                 f"see {self.log_dir}")

    def _wait_rest(self, deadline: float) -> None:
        last = "no answer yet"
        while time.monotonic() < deadline:
            self._check_jobmanager()
            try:
                requests.get(f"{self.rest_url}/overview", timeout=2).raise_for_status()
                return
            except requests.RequestException as exc:
                last = str(exc)
            time.sleep(0.25)
        raise TemporaryError(f"the JobManager's REST API at {self.rest_url} did not answer "
                             f"in time ({last}); see {self.log_dir}")

    def _wait_registered(self, pod: Pod, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_jobmanager()
            if pod.taskmanager is not None and not pod.taskmanager.alive():
                raise PermanentError(f"pod {pod.name}: TaskManager exited with "
                                     f"{pod.taskmanager.returncode} during start; see "
                                     f"{pod.log_dir}")
            ids = {tm.get("id") for tm in self.get("/taskmanagers").get("taskmanagers", [])}
            if pod.name in ids:
                return
            time.sleep(0.2)
        raise TemporaryError(f"pod {pod.name}: TaskManager did not register in time; "
                             f"see {pod.log_dir}")


def parse_removal(value: str) -> Removal:
    try:
        return Removal(value.lower())
    except ValueError as exc:
        raise PermanentError(f"removal {value!r}; expected sigterm or sigkill") from exc
