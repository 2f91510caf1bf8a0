"""The fork server: real zygote process, real forked workers."""

from __future__ import annotations

import os
import signal
import time

import pytest

from harness_pool.pool.core import PoolId
from harness_pool.pool.forkserver import ForkServerLauncher
from tests.sidecar_fixtures import pid_alive


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _wait_exit(proc, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return code
        time.sleep(0.02)
    raise AssertionError(f"pid {proc.pid} never exited")


@pytest.fixture
def launcher():
    # No sidecar listens on port 1: a forked worker's Attach fails and it exits with 3.
    launcher = ForkServerLauncher("127.0.0.1:1", "beam")
    yield launcher
    launcher.close()
    zygote = launcher._proc
    assert zygote is None or zygote.poll() is not None


def test_workers_are_forked_children_of_one_zygote(launcher: ForkServerLauncher) -> None:
    a = launcher.launch(PoolId("w-1"))
    b = launcher.launch(PoolId("w-2"))
    zygote = launcher._proc
    assert zygote is not None and a.pid != b.pid
    for proc in (a, b):
        if pid_alive(proc.pid):
            assert _ppid(proc.pid) == zygote.pid
    assert _wait_exit(a) == 3 and _wait_exit(b) == 3  # refused attach, reported by the zygote


def test_signals_reach_the_forked_worker_and_exit_code_is_reported(
        launcher: ForkServerLauncher) -> None:
    proc = launcher.launch(PoolId("w-1"))
    try:
        proc.send_signal(signal.SIGKILL)
    except ProcessLookupError:
        pytest.fail("the worker exited before it could be signalled")
    assert _wait_exit(proc) in (-9, 3)


def test_a_dead_zygote_is_replaced_on_next_launch(launcher: ForkServerLauncher) -> None:
    first = launcher.launch(PoolId("w-1"))
    old = launcher._proc
    assert old is not None
    os.kill(old.pid, signal.SIGKILL)
    old.wait(10)
    assert _wait_exit(first) in (3, -1)  # its code may be lost with the zygote
    second = launcher.launch(PoolId("w-2"))
    assert launcher._proc is not None and launcher._proc.pid != old.pid
    assert _wait_exit(second) == 3
