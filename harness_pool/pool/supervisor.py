"""Process supervision for pooled workers: spawn, reap, stop (TERM → grace → KILL).

The ``Supervisor`` owns one thread that spawns what the pool's plan asks for,
reaps exited children and escalates stops. It never decides *which* worker
does what: it asks the ``Pool`` (which wraps the pure ``PoolCore``) and reports
back exits. Processes are started through a ``Launcher`` so tests can use tiny
real child processes instead of Beam workers.

Threads: the supervisor thread is the only one that calls ``Popen`` methods
other than ``send_signal``; stop requests from gRPC threads go through
``request_stop``, which signals immediately and leaves escalation and reaping
to the supervisor thread.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

from harness_pool.pool.core import PoolId

_LOG = logging.getLogger("harness_pool.supervisor")


class Process(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...


class Launcher(Protocol):
    def launch(self, pool_id: PoolId) -> Process: ...


class WorkerLauncher:
    """Starts ``python -m harness_pool.pool.worker`` children that attach to ``sidecar``."""

    def __init__(
        self,
        sidecar: str,
        flavor: str,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
    ) -> None:
        self.sidecar = sidecar
        self.flavor = flavor
        self.python = python
        self.env = env

    def command(self, pool_id: PoolId) -> list[str]:
        return [self.python, "-m", "harness_pool.pool.worker",
                "--sidecar", self.sidecar, "--pool-id", pool_id, "--flavor", self.flavor]

    def launch(self, pool_id: PoolId) -> Process:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return subprocess.Popen(self.command(pool_id), env=env, stdin=subprocess.DEVNULL)


class Hooks(Protocol):
    """What the supervisor reports to and asks of the pool."""

    def plan_spawns(self) -> tuple[tuple[PoolId, ...], float | None]: ...

    def spawned(self, pool_id: PoolId, pid: int) -> None: ...

    def spawn_failed(self, pool_id: PoolId, error: str) -> None: ...

    def exited(self, pool_id: PoolId, code: int | None) -> None: ...


class Supervisor:
    def __init__(
        self,
        launcher: Launcher,
        hooks: Hooks,
        grace: float = 5.0,
        tick: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.launcher = launcher
        self.hooks = hooks
        self.grace = grace
        self.tick = tick
        self.clock = clock
        self._procs: dict[PoolId, Process] = {}
        self._kill_at: dict[PoolId, float] = {}
        self._lock = threading.Lock()  # guards _procs and _kill_at; never held while calling hooks
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hp-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def pid_of(self, pool_id: PoolId) -> int | None:
        with self._lock:
            proc = self._procs.get(pool_id)
        return proc.pid if proc else None

    def request_stop(self, pool_id: PoolId, sig: int = signal.SIGTERM) -> None:
        """Signals the worker now; SIGKILL follows after ``grace`` if it is still there."""
        with self._lock:
            proc = self._procs.get(pool_id)
            if proc is None:
                return
            self._kill_at.setdefault(pool_id, self.clock() + self.grace)
        try:
            proc.send_signal(sig)
        except (ProcessLookupError, OSError):
            pass
        self._wake.set()

    def kill_now(self, pool_id: PoolId) -> None:
        self.request_stop(pool_id, signal.SIGKILL)

    def live_pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._procs.values()]

    def shutdown(self, grace: float | None = None) -> None:
        """SIGTERM every child, wait ``grace``, SIGKILL the rest, reap all, stop the thread."""
        grace = self.grace if grace is None else grace
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            procs = dict(self._procs)
        for proc in procs.values():
            try:
                proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
        deadline = self.clock() + grace
        while procs and self.clock() < deadline:
            self._reap(procs)
            time.sleep(0.02)
        for pool_id, proc in procs.items():
            _LOG.warning("worker %s (pid %d) still running after %.1fs grace: SIGKILL",
                         pool_id, proc.pid, grace)
            try:
                proc.send_signal(signal.SIGKILL)
            except OSError:
                pass
        while procs:
            self._reap(procs)
            time.sleep(0.01)

    # -- the supervisor thread ----------------------------------------------

    def _loop(self) -> None:
        recheck: float | None = None
        while not self._stop.is_set():
            ids, recheck = self.hooks.plan_spawns()
            for pool_id in ids:
                self._spawn(pool_id)
            with self._lock:
                procs = dict(self._procs)
            self._reap(procs)
            self._escalate()
            timeout = self.tick
            if recheck is not None:
                timeout = max(0.0, min(timeout, recheck - self.clock()))
            self._wake.wait(timeout)
            self._wake.clear()

    def _spawn(self, pool_id: PoolId) -> None:
        try:
            proc = self.launcher.launch(pool_id)
        except OSError as exc:
            _LOG.error("could not start worker %s: %s", pool_id, exc)
            self.hooks.spawn_failed(pool_id, str(exc))
            return
        with self._lock:
            self._procs[pool_id] = proc
        self.hooks.spawned(pool_id, proc.pid)

    def _reap(self, procs: dict[PoolId, Process]) -> None:
        for pool_id, proc in list(procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del procs[pool_id]
            with self._lock:
                self._procs.pop(pool_id, None)
                self._kill_at.pop(pool_id, None)
            self.hooks.exited(pool_id, code)

    def _escalate(self) -> None:
        now = self.clock()
        with self._lock:
            due = [(i, self._procs[i]) for i, t in self._kill_at.items()
                   if t <= now and i in self._procs]
            for pool_id, _ in due:
                self._kill_at[pool_id] = float("inf")
        for pool_id, proc in due:
            _LOG.warning("worker %s (pid %d) ignored SIGTERM for %.1fs: SIGKILL",
                         pool_id, proc.pid, self.grace)
            try:
                proc.send_signal(signal.SIGKILL)
            except OSError:
                pass
