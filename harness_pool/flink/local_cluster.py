"""A real local Flink session cluster (1 JobManager, 1 TaskManager) for tests and demos.

It runs the Flink distribution shipped inside the ``apache-flink`` PyPI package
(``pyflink/bin``, ``pyflink/lib``, ``pyflink/opt``) with Java from the machine.

Invariants:

- Everything the cluster writes lives under ``workdir``: a private
  ``FLINK_CONF_DIR`` (a copy of ``pyflink/conf`` with our ``config.yaml``), a
  private ``FLINK_LIB_DIR`` (symlinks to ``pyflink/lib`` plus
  ``flink-python``, so PyFlink jobs submitted over REST find the Python
  driver), ``FLINK_LOG_DIR``, checkpoints and savepoints.
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
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import requests
import yaml

from harness_pool._errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)

_JOB_ID_RE = re.compile(r"JobID ([0-9a-f]{32})")


def pyflink_home() -> Path:
    """The Flink distribution inside the installed ``apache-flink`` package."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _flatten(prefix: str, value: object, out: dict[str, object]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        out[prefix] = value


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
        self.savepoint_dir = self.workdir / "savepoints"
        self.checkpoint_dir = self.workdir / "checkpoints"
        self.rest_port = 0
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._outputs: list[object] = []
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
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name, proc in list(self._procs.items()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM; sending SIGKILL", name, proc.pid)
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=10)
            # Python workers of the group may outlive the JVM: end the group too.
            self._signal_group(proc, signal.SIGKILL)
            log.info("%s (pid %d) exited with %s", name, proc.pid, proc.returncode)
            del self._procs[name]
        for handle in self._outputs:
            handle.close()  # type: ignore[attr-defined]
        self._outputs.clear()

    def client_env(self) -> dict[str, str]:
        """Environment for the ``flink`` CLI talking to this cluster."""
        env = dict(os.environ)
        env.update(
            FLINK_HOME=str(self.home),
            FLINK_CONF_DIR=str(self.conf_dir),
            FLINK_LIB_DIR=str(self.lib_dir),
            FLINK_LOG_DIR=str(self.log_dir),
            PYFLINK_CLIENT_EXECUTABLE=sys.executable,
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        )
        return env

    def run_python_job(
        self,
        script: Path,
        args: Sequence[str] = (),
        detached: bool = True,
        parallelism: int | None = None,
        savepoint: str | None = None,
        pyfs: Sequence[Path] | None = None,
        timeout: float = 300.0,
    ) -> str:
        """Submit a PyFlink script with ``flink run -py``; return its job id."""
        cmd = [str(self.home / "bin" / "flink"), "run", "-m", f"127.0.0.1:{self.rest_port}"]
        if detached:
            cmd.append("-d")
        if parallelism is not None:
            cmd += ["-p", str(parallelism)]
        if savepoint:
            cmd += ["-s", savepoint]
        if pyfs:
            cmd += ["-pyfs", ",".join(str(p) for p in pyfs)]
        cmd += ["-py", str(script), *args]
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
        for directory in (self.log_dir, self.savepoint_dir, self.checkpoint_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if self.conf_dir.exists():
            shutil.rmtree(self.conf_dir)
        shutil.copytree(self.home / "conf", self.conf_dir)
        if self.lib_dir.exists():
            shutil.rmtree(self.lib_dir)
        self.lib_dir.mkdir()
        for jar in (self.home / "lib").glob("*.jar"):
            (self.lib_dir / jar.name).symlink_to(jar)
        for jar in (self.home / "opt").glob("flink-python*.jar"):
            (self.lib_dir / jar.name).symlink_to(jar)
        base = yaml.safe_load((self.home / "conf" / "config.yaml").read_text()) or {}
        flat: dict[str, object] = {}
        _flatten("", base, flat)
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
            }
        )
        (self.workdir / "uploads").mkdir(exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        flat.update(self.conf)
        lines = [f"{key}: {yaml.safe_dump(value, default_flow_style=True).strip()}"
                 .replace("\n...", "") for key, value in flat.items()]
        (self.conf_dir / "config.yaml").write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, script: str) -> None:
        env = self.client_env()
        env.update(self.env)
        out = open(self.log_dir / f"{name}.stdout", "ab")
        self._outputs.append(out)
        proc = subprocess.Popen(
            [str(self.home / "bin" / script), "start-foreground"],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.workdir,
        )
        self._procs[name] = proc
        log.info("started Flink %s (pid %d)", name, proc.pid)

    def _wait_ready(self, deadline: float) -> None:
        last = "no answer yet"
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
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

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # the group we created with start_new_session
        except (ProcessLookupError, PermissionError):
            pass
