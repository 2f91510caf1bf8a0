"""Boot loops for external SDK harnesses, as a container runtime would run them.

``BootLoop`` re-runs a boot command whenever it exits (a container restart
policy of "Always"), until ``stop()``. Two boots are provided:

- ``beam_boot``: ``fake_boot.py``, the Beam Python container's boot contract
  (GetProvisionInfo with ``--id``, then ``sdk_worker_main`` with WORKER_ID);
- ``pyflink_boot``: PyFlink's own ``pyflink.fn_execution.beam.beam_boot``,
  with no PYTHON_LOOPBACK_SERVER_ADDRESS in its environment.

Every process a loop starts is recorded in ``pids``; ``stop()`` ends the
current one by pid (SIGTERM, then SIGKILL) and reaps it. The ``boots`` fixture
stops every loop at teardown and fails the test if any process it started is
still alive.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.sidecar_fixtures import pid_alive

FAKE_BOOT = str(Path(__file__).with_name("fake_boot.py"))
ROOT = str(Path(__file__).resolve().parents[2])


def beam_boot(wid: str, address: str, *extra: str) -> list[str]:
    return [sys.executable, FAKE_BOOT, "--id", wid, "--provision_endpoint", address, *extra]


def pyflink_boot(wid: str, address: str) -> list[str]:
    return [sys.executable, "-m", "pyflink.fn_execution.beam.beam_boot", "--id", wid,
            "--provision_endpoint", address]


class BootLoop:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.pids: list[int] = []
        self.exits: list[int] = []
        self.current: subprocess.Popen[bytes] | None = None
        self.started = threading.Event()  # set each time a process starts
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"boot-{argv[-1]}", daemon=True)

    def start(self) -> BootLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in (
            "PYTHON_LOOPBACK_SERVER_ADDRESS", "WORKER_ID")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
        with open(self.log, "ab") as out:
            while not self._stop.is_set():
                with self._lock:
                    if self._stop.is_set():
                        return
                    self.current = subprocess.Popen(self.argv, stdout=out, stderr=out, env=env)
                    self.pids.append(self.current.pid)
                self.started.set()
                self.exits.append(self.current.wait())

    def kill_current(self) -> int:
        """SIGKILL the running harness (a container crash); the loop restarts it."""
        with self._lock:
            proc = self.current
        assert proc is not None and proc.poll() is None, "no harness running"
        proc.kill()
        return proc.pid

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            proc = self.current
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._thread.join(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def boots(tmp_path: Path) -> Iterator[Callable[[list[str]], BootLoop]]:
    loops: list[BootLoop] = []

    def start(argv: list[str]) -> BootLoop:
        loop = BootLoop(argv, tmp_path / f"boot-{len(loops)}.log").start()
        loops.append(loop)
        return loop

    try:
        yield start
    finally:
        for loop in loops:
            loop.stop()
        leaked = [pid for loop in loops for pid in loop.pids if pid_alive(pid)]
        assert not leaked, f"harness processes left behind: {leaked}"
