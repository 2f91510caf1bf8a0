"""A local "pod" of a reactive Flink cluster: one TaskManager and, beside it, its own sidecar.

It mirrors the TaskManager pod of ``k8s/reactive``: the harness-pool sidecar
(``harness-pool serve --flavor pyflink``, a subprocess on its own ports) starts
first and must be ready (a warm worker: the pod's startup probe) before the
TaskManager starts with ``PYTHON_LOOPBACK_SERVER_ADDRESS`` pointing at it; on
removal the TaskManager goes first (SIGTERM as Kubernetes sends it, or SIGKILL
as a lost node or OOM kill does) and the sidecar after it, as a native sidecar
is stopped after the main container. In process mode (``PythonWorkers.PROCESS``)
there is no sidecar.

Invariants:

- Each pod has its own folder (``conf``, ``log``, ``pid``, ``tmp``); the
  TaskManager's ``io.tmp.dirs`` is the pod's ``tmp``, which the sidecar sees at
  the same path (the shared emptyDir of the real pod).
- The TaskManager's resource id is the pod's name, so Flink's REST API and logs
  name pods as this module does.
- ``Pod`` moves through ``PodPhase`` by the transition table; ``stop`` reaps
  every process the pod started, whatever phase it is in.

Threads: a pod is driven by one thread (its cluster's caller).
"""

from __future__ import annotations

import enum
import logging
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from harness_pool._errors import IllegalTransition, PermanentError, TemporaryError
from harness_pool.flink.distribution import ChildProcess, free_port, write_config

log = logging.getLogger(__name__)


class PythonWorkers(enum.Enum):
    """Who runs a TaskManager's Python stages."""

    POOL = "pool"  # the pod's sidecar; python.executable = harness-pool-python (fast boot)
    POOL_PYFLINK_BOOT = "pool-pyflink-boot"  # the pod's sidecar; PyFlink's own beam_boot
    PROCESS = "process"  # PyFlink's process mode: a cold Python process per stage, no sidecar

    @property
    def sidecar(self) -> bool:
        return self is not PythonWorkers.PROCESS


class Removal(enum.Enum):
    """How a pod's TaskManager leaves."""

    SIGTERM = "sigterm"  # a scale-down or an eviction: Flink shuts down in order
    SIGKILL = "sigkill"  # a lost node or an OOM kill: the TaskManager vanishes


class PodPhase(enum.Enum):
    NEW = "new"  # folders not written, nothing started
    STARTING = "starting"  # sidecar and/or TaskManager started, not registered yet
    RUNNING = "running"  # TaskManager registered with the JobManager
    TASKMANAGER_GONE = "taskmanager-gone"  # TaskManager exited; the sidecar may still run
    STOPPED = "stopped"  # every process of the pod reaped


_LEGAL: dict[PodPhase, frozenset[PodPhase]] = {
    PodPhase.NEW: frozenset({PodPhase.STARTING, PodPhase.STOPPED}),
    PodPhase.STARTING: frozenset({PodPhase.RUNNING, PodPhase.TASKMANAGER_GONE,
                                  PodPhase.STOPPED}),
    # RUNNING -> STARTING: a TaskManager that died on its own is restarted in place,
    # as a Deployment's pod (restartPolicy: Always) restarts its container.
    PodPhase.RUNNING: frozenset({PodPhase.STARTING, PodPhase.TASKMANAGER_GONE,
                                 PodPhase.STOPPED}),
    PodPhase.TASKMANAGER_GONE: frozenset({PodPhase.STOPPED}),
    PodPhase.STOPPED: frozenset(),
}

#: TaskManager SIGTERM grace (Kubernetes' default terminationGracePeriodSeconds is 30 s).
TASKMANAGER_GRACE = 30.0
#: Sidecar flags for a local pod: short drain and grace, so a removal takes seconds.
SIDECAR_DRAIN_TIMEOUT = 5.0
SIDECAR_STOP_GRACE = 2.0


class Pod:
    """One TaskManager (and its sidecar) of a ``ReactiveCluster``."""

    def __init__(self, name: str, workdir: Path, slots: int, python: PythonWorkers) -> None:
        self.name = name
        self.workdir = workdir
        self.slots = slots
        self.python = python
        self.conf_dir = workdir / "conf"
        self.log_dir = workdir / "log"
        self.pid_dir = workdir / "pid"
        self.tmp_dir = workdir / "tmp"
        self.phase = PodPhase.NEW
        self.sidecar: ChildProcess | None = None
        self.taskmanager: ChildProcess | None = None
        self.sidecar_port = 0
        self.metrics_port = 0
        self.taskmanager_started_wall = 0.0  # time.time() when the TaskManager was spawned
        self.registered_wall = 0.0  # time.time() when the JobManager was seen listing it
        self.taskmanager_exit: int | None = None
        self.sidecar_exit: int | None = None
        self.restarts: list[int | None] = []  # exit codes of TaskManagers that died on their own
        self._tm_argv: list[str] = []
        self._tm_env: dict[str, str] = {}

    @property
    def sidecar_address(self) -> str:
        if not self.sidecar_port:
            raise PermanentError(f"pod {self.name} has no sidecar ({self.python.value} mode)")
        return f"127.0.0.1:{self.sidecar_port}"

    def _move(self, to: PodPhase) -> None:
        if to not in _LEGAL[self.phase]:
            raise IllegalTransition(f"pod {self.name}", self.phase.value, to.value)
        log.info("pod %s: %s -> %s", self.name, self.phase.value, to.value)
        self.phase = to

    # -- start ---------------------------------------------------------------

    def start_sidecar(self, env: Mapping[str, str], ready_timeout: float) -> None:
        """Starts ``harness-pool serve`` for this pod and waits until it can take a stage."""
        self._move(PodPhase.STARTING)
        for folder in (self.conf_dir, self.log_dir, self.pid_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if not self.python.sidecar:
            return
        self.sidecar_port, self.metrics_port = free_port(), free_port()
        argv = [sys.executable, "-m", "harness_pool", "serve", "--host", "127.0.0.1",
                "--port", str(self.sidecar_port), "--flavor", "pyflink",
                # the slot count from the cluster's config.yaml ($FLINK_CONF_DIR), as the
                # sidecar of k8s/reactive reads the ConfigMap its TaskManager mounts
                "--workers", "auto", "--metrics-port", str(self.metrics_port),
                "--drain-timeout", str(SIDECAR_DRAIN_TIMEOUT),
                "--stop-grace", str(SIDECAR_STOP_GRACE)]
        self.sidecar = ChildProcess(f"pod {self.name} sidecar", argv, env,
                                    self.log_dir / "sidecar.log", self.workdir)
        _wait_serving(self.sidecar, self.sidecar_address, ready_timeout)

    def start_taskmanager(self, script: Path, env: Mapping[str, str],
                          conf: Mapping[str, object], conf_template: Path) -> None:
        """Writes the pod's own config (``conf_template``'s logging files, ``conf`` with this
        pod's ports and folders) and starts ``taskmanager.sh start-foreground``."""
        shutil.copytree(conf_template, self.conf_dir, dirs_exist_ok=True)
        pod_conf = dict(conf)
        pod_conf.update({
            "taskmanager.resource-id": self.name,
            "taskmanager.numberOfTaskSlots": self.slots,
            "taskmanager.rpc.port": "0",
            "taskmanager.data.port": 0,
            "io.tmp.dirs": str(self.tmp_dir),
            "env.pid.dir": str(self.pid_dir),
        })
        write_config(self.conf_dir, pod_conf)
        tm_env = dict(env)
        tm_env.update(FLINK_CONF_DIR=str(self.conf_dir), FLINK_LOG_DIR=str(self.log_dir),
                      FLINK_PID_DIR=str(self.pid_dir))
        if self.sidecar is not None:
            tm_env["PYTHON_LOOPBACK_SERVER_ADDRESS"] = self.sidecar_address
        self._tm_argv, self._tm_env = [str(script), "start-foreground"], tm_env
        self._spawn_taskmanager()

    def _spawn_taskmanager(self) -> None:
        self.taskmanager_started_wall = time.time()
        self.taskmanager = ChildProcess(f"pod {self.name} taskmanager", self._tm_argv,
                                        self._tm_env, self.log_dir / "taskmanager.stdout",
                                        self.workdir)

    def taskmanager_died(self) -> bool:
        """The TaskManager of a running pod exited without being asked to."""
        return (self.phase is PodPhase.RUNNING and self.taskmanager is not None
                and not self.taskmanager.alive())

    def restart_taskmanager(self) -> int | None:
        """Reaps the TaskManager that died on its own and starts it again beside the same
        sidecar (the pod's restartPolicy: Always); returns the dead one's exit code."""
        assert self.taskmanager is not None
        code = self.taskmanager.stop(grace=0.0)
        self.restarts.append(code)
        self._move(PodPhase.STARTING)
        self._spawn_taskmanager()
        return code

    def log_mentions(self, text: str) -> bool:
        """Whether any of the pod's log files contains ``text``."""
        return any(text in path.read_text(errors="replace")
                   for path in self.log_dir.glob("*") if path.is_file())

    def registered(self) -> None:
        self.registered_wall = time.time()
        self._move(PodPhase.RUNNING)

    # -- removal -------------------------------------------------------------

    def remove_taskmanager(self, how: Removal, grace: float = TASKMANAGER_GRACE) -> int | None:
        """Ends the TaskManager as Kubernetes would; returns its exit code (reaped)."""
        if self.taskmanager is None or self.phase in (PodPhase.TASKMANAGER_GONE,
                                                      PodPhase.STOPPED):
            return self.taskmanager_exit
        tm = self.taskmanager
        if how is Removal.SIGKILL:
            tm.send(signal.SIGKILL, group=True)  # the container dies: the JVM and its children
            self.taskmanager_exit = tm.stop(grace=5.0, sig=signal.SIGKILL)
        else:
            self.taskmanager_exit = tm.stop(grace=grace, sig=signal.SIGTERM)
        log.info("pod %s: TaskManager (pid %d) removed by %s, exit code %s", self.name, tm.pid,
                 how.value, self.taskmanager_exit)
        self._move(PodPhase.TASKMANAGER_GONE)
        return self.taskmanager_exit

    def stop_sidecar(self) -> int | None:
        """SIGTERM to the sidecar (it drains, stops and reaps its workers); returns its code."""
        if self.sidecar is not None and self.sidecar_exit is None:
            grace = SIDECAR_DRAIN_TIMEOUT + SIDECAR_STOP_GRACE + 10.0
            self.sidecar_exit = self.sidecar.stop(grace=grace)
        return self.sidecar_exit

    def stop(self, how: Removal = Removal.SIGTERM) -> None:
        """TaskManager first, then the sidecar; every process reaped (idempotent)."""
        if self.phase is PodPhase.STOPPED:
            return
        try:
            if self.taskmanager is not None:
                self.remove_taskmanager(how)
        finally:
            self.stop_sidecar()
            self._move(PodPhase.STOPPED)

    def survivors(self) -> list[int]:
        """Processes of this pod still alive (after ``stop()`` this must be empty)."""
        return [pid for proc in (self.taskmanager, self.sidecar) if proc is not None
                for pid in proc.survivors()]

    def pids(self) -> dict[str, int]:
        out = {}
        if self.taskmanager is not None:
            out["taskmanager"] = self.taskmanager.pid
        if self.sidecar is not None:
            out["sidecar"] = self.sidecar.pid
        return out


def _wait_serving(proc: ChildProcess, address: str, timeout: float) -> None:
    """Waits until the sidecar's readiness (gRPC health, service "") is SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not proc.alive():
                raise PermanentError(f"{proc.name} exited with {proc.returncode} before it was "
                                     f"ready; see {proc.output}")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as exc:
                last = f"{exc.code().name}"
            time.sleep(0.2)
    raise TemporaryError(f"{proc.name} at {address} not ready after {timeout:.0f} s ({last}); "
                         f"see {proc.output}")
