"""The Flink distribution inside the ``apache-flink`` package, and the processes it runs.

Shared by the session cluster (``local_cluster``) and the reactive application
cluster (``reactive``): where the distribution is, a private copy of its
configuration and library folders, Flink's flat ``config.yaml``, and
``ChildProcess``, one child (a JVM started by Flink's ``*-start-foreground``
scripts, or a sidecar) in its own session.

Invariants:

- A ``ChildProcess`` is started with ``start_new_session``: its pid is its
  process-group id, and the group holds whatever it spawns (PyFlink's Python
  workers in process mode). Signals go to exactly that pid or that group,
  never to processes found by name.
- ``ChildProcess.stop`` always reaps: SIGTERM, a bounded wait, SIGKILL of the
  group, a bounded wait; it is idempotent and records the exit code.
- Nothing here writes outside the folders it is given: in particular every
  configuration written here sets ``env.pid.dir`` to a private folder, because
  Flink's default (``/tmp``) is shared with every other Flink on the machine and
  its scripts ``flock`` it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import yaml

log = logging.getLogger(__name__)

#: Flink's Python driver: the entry class of a PyFlink application (``-py job.py``).
PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"


def pyflink_home() -> Path:
    """The Flink distribution inside the installed ``apache-flink`` package."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flatten(prefix: str, value: object, out: dict[str, object]) -> None:
    """Flink's nested YAML as flat ``a.b.c: value`` keys (what Flink itself accepts)."""
    if isinstance(value, dict):
        for key, sub in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        out[prefix] = value


def default_config(home: Path) -> dict[str, object]:
    """The distribution's own ``conf/config.yaml``, flattened."""
    base = yaml.safe_load((home / "conf" / "config.yaml").read_text()) or {}
    flat: dict[str, object] = {}
    flatten("", base, flat)
    return flat


def write_config(conf_dir: Path, flat: Mapping[str, object]) -> Path:
    """Writes ``conf_dir/config.yaml`` with one flat key per line; returns its path."""
    lines = [f"{key}: {yaml.safe_dump(value, default_flow_style=True).strip()}"
             .replace("\n...", "") for key, value in flat.items()]
    path = conf_dir / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def copy_conf_dir(home: Path, conf_dir: Path) -> None:
    """A fresh private copy of the distribution's ``conf`` (log4j files and all)."""
    if conf_dir.exists():
        shutil.rmtree(conf_dir)
    shutil.copytree(home / "conf", conf_dir)


def link_lib_dir(home: Path, lib_dir: Path) -> None:
    """``lib`` with the distribution's jars plus ``flink-python`` (so PyFlink jobs run)."""
    if lib_dir.exists():
        shutil.rmtree(lib_dir)
    lib_dir.mkdir(parents=True)
    for jar in (home / "lib").glob("*.jar"):
        (lib_dir / jar.name).symlink_to(jar)
    for jar in (home / "opt").glob("flink-python*.jar"):
        (lib_dir / jar.name).symlink_to(jar)


def flink_env(home: Path, conf_dir: Path, lib_dir: Path, log_dir: Path,
              pid_dir: Path) -> dict[str, str]:
    """Process environment for Flink's scripts using these private folders."""
    env = dict(os.environ)
    env.update(
        FLINK_HOME=str(home),
        FLINK_CONF_DIR=str(conf_dir),
        FLINK_LIB_DIR=str(lib_dir),
        FLINK_LOG_DIR=str(log_dir),
        FLINK_PID_DIR=str(pid_dir),
        PYFLINK_CLIENT_EXECUTABLE=sys.executable,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


class ChildProcess:
    """One child process in its own session, its output appended to ``output``."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], output: Path,
                 cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.output = output
        output.parent.mkdir(parents=True, exist_ok=True)
        self._out: IO[bytes] | None = open(output, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv, env=dict(env), stdout=self._out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
        except OSError:
            self._close_output()
            raise
        self.started_at = time.monotonic()
        log.info("started %s (pid %d): %s", name, self.proc.pid, " ".join(self.argv[:3]))

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: int, group: bool = False) -> None:
        """Sends ``sig`` to the process (or its whole group); a no-op once it is gone."""
        try:
            if group:
                os.killpg(self.proc.pid, sig)  # the group start_new_session created
            elif self.proc.poll() is None:
                self.proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    def survivors(self) -> list[int]:
        """Live (non-zombie) processes still in this child's process group."""
        return group_members(self.proc.pid)

    def wait(self, timeout: float) -> int | None:
        """Waits up to ``timeout`` seconds; returns the exit code, None if still running."""
        try:
            return self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float, sig: int = signal.SIGTERM) -> int | None:
        """``sig`` to the process, ``grace`` seconds, then SIGKILL to the group; reaps."""
        if self.proc.poll() is None:
            self.send(sig)
            if self.wait(grace) is None:
                log.warning("%s (pid %d) still running %.0f s after %s; sending SIGKILL",
                            self.name, self.pid, grace, signal.Signals(sig).name)
        # Whatever the group still holds (Python workers of a TaskManager) goes too.
        self.send(signal.SIGKILL, group=True)
        code = self.wait(30.0)
        self._close_output()
        log.info("%s (pid %d) exited with %s", self.name, self.pid, code)
        return code

    def _close_output(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def group_members(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes whose process group is ``pgid`` (from /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return sorted(members)
