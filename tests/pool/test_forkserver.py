"""The fork server: real zygote processes, real forked workers."""

from __future__ import annotations

import os
import signal
import time

import pytest

from harness_pool.pool.core import PoolId
from harness_pool.pool.forkserver import ZOMBIE_GRACE, ForkServerLauncher
from harness_pool.pool.supervisor import SpawnSpec
from tests.sidecar_fixtures import pid_alive


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _spec(pool_id: str) -> SpawnSpec:
    return SpawnSpec(PoolId(pool_id), f"token-{pool_id}")


def _wait_exit(proc, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return code
        time.sleep(0.02)
    raise AssertionError(f"pid {proc.pid}: its exit was never seen")


@pytest.fixture
def launcher():
    # No sidecar listens on port 1: a forked worker's Attach fails and it exits with 3.
    launcher = ForkServerLauncher("127.0.0.1:1", "beam")
    yield launcher
    zygotes = launcher.helper_pids()
    launcher.close()
    assert not [p for p in zygotes if pid_alive(p)]


def test_workers_are_forked_children_of_one_zygote(launcher: ForkServerLauncher) -> None:
    a = launcher.launch(_spec("w-1"))
    b = launcher.launch(_spec("w-2"))
    zygote = launcher.zygote_pid
    assert zygote is not None and a.pid != b.pid
    assert launcher.helper_pids() == {zygote}
    for proc in (a, b):
        if pid_alive(proc.pid):
            assert _ppid(proc.pid) == zygote
    assert _wait_exit(a) == 3 and _wait_exit(b) == 3  # refused attach, reported by the zygote


def test_signals_reach_the_forked_worker_and_exit_code_is_reported(
        launcher: ForkServerLauncher) -> None:
    proc = launcher.launch(_spec("w-1"))
    try:
        proc.send_signal(signal.SIGKILL)
    except ProcessLookupError:
        pytest.fail("the worker exited before it could be signalled")
    assert _wait_exit(proc) in (-9, 3)


def test_a_dead_zygote_is_replaced_on_next_launch(launcher: ForkServerLauncher) -> None:
    first = launcher.launch(_spec("w-1"))
    old = launcher.zygote_pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    _wait_gone(old)
    assert _wait_exit(first) in (3, -1)  # its code may be lost with the zygote
    second = launcher.launch(_spec("w-2"))
    assert launcher.zygote_pid is not None and launcher.zygote_pid != old
    assert _wait_exit(second) == 3


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.01)


def test_workers_of_a_replaced_zygote_are_still_tracked(tmp_path) -> None:
    """Generation 1's worker, still alive when generation 2 starts, is seen exiting."""
    # Workers attach to a blackhole (a listening socket that never answers): they stay alive.
    import socket

    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        launcher = ForkServerLauncher(f"127.0.0.1:{hole.getsockname()[1]}", "beam")
        try:
            old_worker = launcher.launch(_spec("w-1"))
            old_zygote = launcher.zygote_pid
            assert old_zygote is not None
            os.kill(old_zygote, signal.SIGKILL)
            _wait_gone(old_zygote)
            new_worker = launcher.launch(_spec("w-2"))  # generation 2
            assert launcher.zygote_pid != old_zygote
            assert old_worker.poll() is None, "a live worker of generation 1 was taken as gone"
            os.kill(old_worker.pid, signal.SIGKILL)
            assert _wait_exit(old_worker, 30) in (-9, -1)
            new_worker.send_signal(signal.SIGKILL)
            assert _wait_exit(new_worker, 30) == -9
        finally:
            zygotes = launcher.helper_pids()
            launcher.close()
    assert not [p for p in zygotes if pid_alive(p)]
    assert not pid_alive(old_worker.pid) and not pid_alive(new_worker.pid)


def test_a_zombie_its_zygote_does_not_reap_counts_as_exited(launcher: ForkServerLauncher
                                                             ) -> None:
    proc = launcher.launch(_spec("w-1"))
    zygote = launcher.zygote_pid
    assert zygote is not None
    os.kill(zygote, signal.SIGSTOP)  # a wedged fork server: it reaps nothing
    try:
        os.kill(proc.pid, signal.SIGKILL)
        code = _wait_exit(proc, 10 + ZOMBIE_GRACE)
    finally:
        os.kill(zygote, signal.SIGCONT)
    assert code in (-1, -9, 3)


def test_a_stray_print_in_the_zygote_does_not_break_the_protocol(tmp_path, monkeypatch) -> None:
    """A sitecustomize that prints (or any noisy import) must not kill the fork server."""
    (tmp_path / "sitecustomize.py").write_text("print('hello from sitecustomize')\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    launcher = ForkServerLauncher("127.0.0.1:1", "beam", start_timeout=120)
    try:
        proc = launcher.launch(_spec("w-1"))
        assert _wait_exit(proc) == 3
    finally:
        launcher.close()
