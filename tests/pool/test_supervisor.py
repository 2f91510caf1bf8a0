"""The supervisor against tiny real child processes (no Beam)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from harness_pool.pool.core import Backoff, PoolCore, PoolId
from harness_pool.pool.pool import Pool
from harness_pool.pool.supervisor import SpawnSpec, Supervisor
from tests.sidecar_fixtures import pid_alive

IGNORE_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
SLEEP = "import time; time.sleep(60)"
CRASH = "raise SystemExit(3)"


class ScriptLauncher:
    def __init__(self, script: str) -> None:
        self.script = script
        self.pids: list[int] = []

    def launch(self, spec: SpawnSpec) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", self.script])
        self.pids.append(proc.pid)
        return proc

    def helper_pids(self) -> set[int]:
        return set()


class Recorder:
    """Supervisor hooks that spawn a fixed list of ids once and record exits."""

    def __init__(self, ids: list[str]) -> None:
        self.todo = [SpawnSpec(PoolId(i), "t") for i in ids]
        self.exits: dict[str, int | None] = {}
        self.pids: dict[str, int] = {}
        self.event = threading.Event()

    def plan_spawns(self) -> tuple[tuple[SpawnSpec, ...], float | None]:
        todo, self.todo = tuple(self.todo), []
        return todo, None

    def spawned(self, pool_id: PoolId, pid: int) -> None:
        self.pids[pool_id] = pid

    def spawn_failed(self, pool_id: PoolId, error: str) -> None:
        self.exits[pool_id] = None

    def exited(self, pool_id: PoolId, code: int | None) -> None:
        self.exits[pool_id] = code
        self.event.set()


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_stop_escalates_to_sigkill_after_grace() -> None:
    launcher = ScriptLauncher(IGNORE_TERM)
    hooks = Recorder(["w-1"])
    sup = Supervisor(launcher, hooks, grace=0.3)
    sup.start()
    try:
        assert wait_for(lambda: "w-1" in hooks.pids)
        time.sleep(0.2)  # let the child install its SIGTERM handler
        sup.request_stop(PoolId("w-1"))
        assert wait_for(lambda: "w-1" in hooks.exits)
        assert hooks.exits["w-1"] == -9
    finally:
        sup.shutdown(grace=0.2)
    assert not any(pid_alive(p) for p in launcher.pids)


def test_shutdown_terminates_and_reaps_every_child() -> None:
    launcher = ScriptLauncher(SLEEP)
    hooks = Recorder(["a", "b", "c"])
    sup = Supervisor(launcher, hooks, grace=2.0)
    sup.start()
    assert wait_for(lambda: len(hooks.pids) == 3)
    sup.shutdown()
    assert sorted(hooks.exits) == ["a", "b", "c"]
    assert set(hooks.exits.values()) == {-15}
    assert sup.pids() == {}
    assert not any(pid_alive(p) for p in launcher.pids)


def test_crash_loop_backs_off_instead_of_spinning() -> None:
    """Workers that die before getting warm are restarted with exponential backoff."""
    launcher = ScriptLauncher(CRASH)
    pool = Pool(PoolCore(2, 4, backoff=Backoff(base=0.4, cap=5.0)))
    sup = Supervisor(launcher, pool, grace=0.5)
    pool.supervisor = sup
    sup.start()
    try:
        time.sleep(2.0)
    finally:
        sup.shutdown()
    # Without backoff a 2-worker pool of instantly-dying processes would start
    # dozens in 2 s; with 0.4 s doubling: 2 at t=0, then 1 at ~0.8, ~2.4 ...
    assert 2 <= len(launcher.pids) <= 5, launcher.pids
    assert pool.core.consecutive_crashes >= 2
    assert not any(pid_alive(p) for p in launcher.pids)


class Ghost:
    """A process handle whose process never shows as exited (e.g. lost with its parent)."""

    pid = 2**22 + 7  # beyond pid_max on most systems: signals fail like for a dead pid

    def poll(self) -> int | None:
        return None

    def send_signal(self, sig: int) -> None:
        raise ProcessLookupError(self.pid)


class GhostLauncher:
    def launch(self, spec: SpawnSpec) -> Ghost:
        return Ghost()

    def helper_pids(self) -> set[int]:
        return set()


def test_shutdown_is_bounded_even_for_a_process_that_never_exits() -> None:
    hooks = Recorder(["ghost-1"])
    sup = Supervisor(GhostLauncher(), hooks, grace=0.2, reap_timeout=0.5)
    sup.start()
    assert wait_for(lambda: "ghost-1" in hooks.pids)
    done = threading.Event()
    threading.Thread(target=lambda: (sup.shutdown(), done.set()), daemon=True).start()
    assert done.wait(30), "Supervisor.shutdown looped forever on a process that never exits"
    assert hooks.exits == {"ghost-1": None}  # reported, code unknown
    assert sup.pids() == {}


class FlakyHooks(Recorder):
    """plan_spawns raises on its first two calls, then behaves."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(ids)
        self.calls = 0

    def plan_spawns(self) -> tuple[tuple[SpawnSpec, ...], float | None]:
        self.calls += 1
        if self.calls <= 2:
            raise RuntimeError("boom")
        return super().plan_spawns()


def test_an_exception_in_the_loop_is_logged_and_the_loop_goes_on(caplog) -> None:
    launcher = ScriptLauncher(SLEEP)
    hooks = FlakyHooks(["w-1"])
    sup = Supervisor(launcher, hooks, grace=1.0)
    sup.start()
    try:
        assert wait_for(lambda: "w-1" in hooks.pids, 30), "the supervisor loop died"
    finally:
        sup.shutdown()
    assert "supervisor pass failed (1 in a row)" in caplog.text
    assert not any(pid_alive(p) for p in launcher.pids)


class WedgedHooks(Recorder):
    """plan_spawns blocks (as behind a pool lock held forever) until released."""

    def __init__(self) -> None:
        super().__init__([])
        self.release = threading.Event()

    def plan_spawns(self) -> tuple[tuple[SpawnSpec, ...], float | None]:
        self.release.wait(30)
        return super().plan_spawns()


def test_beat_age_grows_while_the_loop_is_wedged() -> None:
    hooks = WedgedHooks()
    sup = Supervisor(ScriptLauncher(SLEEP), hooks, grace=0.5)
    sup.start()
    try:
        assert wait_for(lambda: sup.beat_age() > 1.0, 20)
    finally:
        hooks.release.set()
    assert wait_for(lambda: sup.beat_age() < 1.0, 20), "the beat did not come back"
    sup.shutdown()


class SlowLauncher(ScriptLauncher):
    """A launch that takes a while (a fork server importing Beam on a busy node)."""

    def __init__(self) -> None:
        super().__init__(SLEEP)
        self.release = threading.Event()

    def launch(self, spec: SpawnSpec) -> subprocess.Popen[bytes]:
        self.release.wait(30)
        return super().launch(spec)


def test_a_slow_launch_is_not_a_wedged_loop() -> None:
    launcher = SlowLauncher()
    sup = Supervisor(launcher, Recorder(["w-1"]), grace=0.5)
    sup.start()
    try:
        time.sleep(1.5)
        assert sup.beat_age() < 1.0
    finally:
        launcher.release.set()
        sup.shutdown()
    assert not any(pid_alive(p) for p in launcher.pids)
