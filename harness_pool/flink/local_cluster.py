"""A real local Flink session cluster (1 JobManager, 1 TaskManager) for tests and demos.

It runs the Flink distribution shipped inside the ``apache-flink`` PyPI package
(``pyflink/bin``, ``pyflink/lib``, ``pyflink/opt``) with Java from the machine.

Invariants:

- Everything the cluster writes lives under ``workdir``: a private
  ``FLINK_CONF_DIR`` (a copy of ``pyflink/conf`` with our ``config.yaml``), a
  private ``FLINK_LIB_DIR`` (symlinks to ``pyflink/lib`` plus
  ``flink-python``, so PyFlink jobs submitted over REST find the Python
  driver), ``FLINK_LOG_DIR``, ``FLINK_PID_DIR`` (never Flink's shared default
  ``/tmp``), checkpoints and savepoints.
- Ports (REST, RPC, blob, TaskManager RPC and data) are chosen free at
  ``start()``; two clusters on one machine do not collide.
- Each JVM is started with ``*-start-foreground`` in its own session, so the
  pid we hold is the JVM's and its process group holds the Python workers it
  spawns. ``stop()`` signals exactly those groups (SIGTERM, grace, SIGKILL) and
  reaps them; it runs even when ``start()`` failed half-way. Never ``pkill``.
- ``env`` reaches the JobManager's and the TaskManager's process environment,
  and through the TaskManager every Python worker it starts
  (e.g. ``PYTHON_LOOPBACK_SERVER_ADDRESS``).
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import requests

from harness_pool._errors import PermanentError, TemporaryError
from harness_pool.flink.distribution import (
    ChildProcess,
    copy_conf_dir,
    default_config,
    flink_env,
    free_port,
    link_lib_dir,
    pyflink_home,
    write_config,
)

__all__ = ["LocalFlinkCluster", "free_port", "pyflink_home"]

log = logging.getLogger(__name__)

_JOB_ID_RE = re.compile(r"JobID ([0-9a-f]{32})")


class LocalFlinkCluster:
    """One JobManager and one TaskManager with ``slots`` slots, as child processes.

    Use as a context manager, or call ``start()`` and ``stop()`` (``stop()`` is
    idempotent and safe after a failed ``start()``).
    """

    def __init__(
        self,
        workdir: Path,
        slots: int = 4,
        env: dict[str, str] | None = None,
        conf: dict[str, str] | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.slots = slots
        self.env = dict(env or {})
        self.conf = dict(conf or {})
        self.start_timeout = start_timeout
        self.home = pyflink_home()
        self.conf_dir = self.workdir / "conf"
        self.lib_dir = self.workdir / "lib"
        self.log_dir = self.workdir / "log"
        self.pid_dir = self.workdir / "pid"
        self.savepoint_dir = self.workdir / "savepoints"
        self.checkpoint_dir = self.workdir / "checkpoints"
        self.rest_port = 0
        self._procs: dict[str, ChildProcess] = {}
        self.start_seconds: float | None = None

    # -- public face ---------------------------------------------------------

    @property
    def rest_url(self) -> str:
        if not self.rest_port:
            raise PermanentError("the local Flink cluster has not been started")
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def pids(self) -> dict[str, int]:
        """Pid of each JVM this object started (``jobmanager``, ``taskmanager``)."""
        return {name: proc.pid for name, proc in self._procs.items()}

    def __enter__(self) -> LocalFlinkCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Write the private config, start both JVMs, wait for all slots."""
        began = time.monotonic()
        try:
            self._prepare()
            self._spawn("jobmanager", "jobmanager.sh")
            self._spawn("taskmanager", "taskmanager.sh")
            self._wait_ready(began + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        log.info(
            "local Flink cluster ready at %s with %d slots after %.1f s (logs in %s)",
            self.rest_url, self.slots, self.start_seconds, self.log_dir,
        )

    def stop(self, grace: float = 15.0) -> None:
        """Stop every JVM this object started (and its process group), by pid."""
        for proc in list(self._procs.values()):
            proc.send(signal.SIGTERM)  # SIGTERM to all first, so they shut down side by side
        deadline = time.monotonic() + grace
        for name, proc in list(self._procs.items()):
            proc.stop(max(0.1, deadline - time.monotonic()))
            del self._procs[name]

    def client_env(self) -> dict[str, str]:
        """Environment for the ``flink`` CLI talking to this cluster."""
        return flink_env(self.home, self.conf_dir, self.lib_dir, self.log_dir, self.pid_dir)

    def run_python_job(
        self,
        script: Path,
        args: Sequence[str] = (),
        detached: bool = True,
        parallelism: int | None = None,
        savepoint: str | None = None,
        pyfs: Sequence[Path] | None = None,
        timeout: float = 300.0,
        options: Sequence[str] = (),
    ) -> str:
        """Submit a PyFlink script with ``flink run -py``; return its job id.

        ``options`` go before ``-py`` as given (``-pyreq``, ``-pyarch``, ``-pyexec``, ...).
        """
        cmd = [str(self.home / "bin" / "flink"), "run", "-m", f"127.0.0.1:{self.rest_port}"]
        if detached:
            cmd.append("-d")
        if parallelism is not None:
            cmd += ["-p", str(parallelism)]
        if savepoint:
            cmd += ["-s", savepoint]
        if pyfs:
            cmd += ["-pyfs", ",".join(str(p) for p in pyfs)]
        cmd += [*options, "-py", str(script), *args]
        result = subprocess.run(
            cmd, env=self.client_env(), capture_output=True, text=True, timeout=timeout,
        )
        match = _JOB_ID_RE.search(result.stdout + result.stderr)
        if result.returncode != 0 or not match:
            tail = (result.stdout + result.stderr)[-3000:]
            raise PermanentError(
                f"flink run -py {script} failed (exit {result.returncode}): {tail}"
            )
        log.info("submitted %s as job %s", script.name, match.group(1))
        return match.group(1)

    def job_state(self, job_id: str) -> str:
        response = requests.get(f"{self.rest_url}/jobs/{job_id}", timeout=10)
        response.raise_for_status()
        return str(response.json()["state"])

    def cancel_all(self, timeout: float = 60.0) -> None:
        """Cancel every job that is not terminal and wait until none is (tests sharing it)."""
        terminal = ("FINISHED", "FAILED", "CANCELED")
        deadline = time.monotonic() + timeout
        while True:
            jobs = requests.get(f"{self.rest_url}/jobs/overview", timeout=10).json()["jobs"]
            active = [j for j in jobs if j["state"] not in terminal]
            if not active:
                return
            if time.monotonic() > deadline:
                raise TemporaryError(f"jobs still active after cancel: {active}")
            for job in active:
                if job["state"] != "CANCELLING":
                    requests.patch(f"{self.rest_url}/jobs/{job['jid']}", timeout=10)
            time.sleep(0.2)

    # -- internals ---------------------------------------------------------

    def _prepare(self) -> None:
        for directory in (self.log_dir, self.pid_dir, self.savepoint_dir, self.checkpoint_dir):
            directory.mkdir(parents=True, exist_ok=True)
        copy_conf_dir(self.home, self.conf_dir)
        link_lib_dir(self.home, self.lib_dir)
        flat = default_config(self.home)
        self.rest_port = free_port()
        flat.update(
            {
                "jobmanager.bind-host": "127.0.0.1",
                "jobmanager.rpc.address": "127.0.0.1",
                "jobmanager.rpc.port": free_port(),
                "jobmanager.memory.process.size": "1024m",
                "taskmanager.bind-host": "127.0.0.1",
                "taskmanager.host": "127.0.0.1",
                "taskmanager.rpc.port": free_port(),
                "taskmanager.data.port": free_port(),
                "taskmanager.numberOfTaskSlots": self.slots,
                "taskmanager.memory.process.size": "1600m",
                "rest.address": "127.0.0.1",
                "rest.bind-address": "127.0.0.1",
                "rest.port": self.rest_port,
                "blob.server.port": free_port(),
                "parallelism.default": 1,
                "python.executable": sys.executable,
                "python.client.executable": sys.executable,
                "state.savepoints.dir": self.savepoint_dir.as_uri(),
                "execution.checkpointing.dir": self.checkpoint_dir.as_uri(),
                "web.upload.dir": str(self.workdir / "uploads"),
                "io.tmp.dirs": str(self.workdir / "tmp"),
                "env.pid.dir": str(self.pid_dir),
            }
        )
        (self.workdir / "uploads").mkdir(exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        flat.update(self.conf)
        write_config(self.conf_dir, flat)

    def _spawn(self, name: str, script: str) -> None:
        env = self.client_env()
        env.update(self.env)
        self._procs[name] = ChildProcess(
            f"Flink {name}", [str(self.home / "bin" / script), "start-foreground"], env,
            self.log_dir / f"{name}.stdout", self.workdir)

    def _wait_ready(self, deadline: float) -> None:
        last = "no answer yet"
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if not proc.alive():
                    raise PermanentError(
                        f"Flink {name} exited with {proc.returncode} during start; "
                        f"see {self.log_dir}"
                    )
            try:
                overview = requests.get(f"{self.rest_url}/overview", timeout=2).json()
                last = f"{overview.get('taskmanagers')} taskmanagers, " \
                       f"{overview.get('slots-total')} slots"
                if overview.get("taskmanagers") == 1 and overview.get("slots-total") == self.slots:
                    return
            except (requests.RequestException, ValueError) as exc:
                last = str(exc)
            time.sleep(0.25)
        raise TemporaryError(
            f"local Flink cluster not ready after {self.start_timeout:.0f} s ({last}); "
            f"see {self.log_dir}"
        )
