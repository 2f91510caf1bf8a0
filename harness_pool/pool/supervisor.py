"""Process supervision for pooled workers: spawn, reap, stop (TERM → grace → KILL).

The ``Supervisor`` owns one thread that spawns what the pool's plan asks for,
reaps exited children and escalates stops. It never decides *which* worker
does what: it asks the ``Pool`` (which wraps the pure ``PoolCore``) and reports
back exits. Processes are started through a ``Launcher`` (a fresh interpreter
per worker, or a fork server) so tests can use tiny real child processes.

Invariants:
- every spawned worker is reported exited exactly once, whatever happens to
  the process that forked it; a zombie counts as exited;
- no loop here is unbounded: shutdown gives up on a process that survives
  SIGKILL for ``reap_timeout`` (it is logged and reported exited, code unknown);
- an exception in one pass of the loop is logged and the loop goes on (with a
  short pause); ``beat_age`` tells liveness whether passes still complete.

Threads: the supervisor thread is the only one that calls ``Launcher.launch``
and ``Process.poll``; stop requests from gRPC threads go through
``request_stop``, which signals at once and leaves escalation and reaping to
the supervisor thread. ``_lock`` guards ``_procs`` and ``_kill_at`` and is
never held while calling the hooks or a process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

from harness_pool.pool import reaping
from harness_pool.pool.core import PoolId

_LOG = logging.getLogger("harness_pool.supervisor")

#: Longest a launch may take (a fork server's start, then its fork) while still
#: counting as progress for liveness.
LAUNCH_BOUND = 180.0


@dataclasses.dataclass(frozen=True)
class SpawnSpec:
    """One worker to start: its pool id and the secret it must attach with."""

    pool_id: PoolId
    token: str = dataclasses.field(repr=False)
    interpreter: str = ""
    """A job's own Python (issue 9); "" = the pool's interpreter."""


class Process(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...


class Launcher(Protocol):
    def launch(self, spec: SpawnSpec) -> Process: ...

    def helper_pids(self) -> set[int]:
        """Processes the launcher runs itself (fork servers): not workers, not orphans."""
        ...


class WorkerLauncher:
    """Starts ``python -m harness_pool.pool.worker`` children that attach to ``sidecar``.

    The spawn secret goes to the child on its stdin, never in argv or the environment.
    """

    def __init__(self, sidecar: str, flavor: str, python: str = sys.executable,
                 env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.sidecar = sidecar
        self.flavor = flavor
        self.python = python
        self.env = env
        self.cwd = cwd  # a neutral directory (interpreters.neutral_dir), never the sidecar's

    def command(self, pool_id: PoolId) -> list[str]:
        return [self.python, "-m", "harness_pool.pool.worker", "--sidecar", self.sidecar,
                "--pool-id", pool_id, "--flavor", self.flavor, "--token-stdin"]

    def launch(self, spec: SpawnSpec) -> Process:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = subprocess.Popen(self.command(spec.pool_id), env=env, stdin=subprocess.PIPE,
                                cwd=self.cwd)
        assert proc.stdin is not None
        try:
            proc.stdin.write(spec.token.encode() + b"\n")
            proc.stdin.close()
        except OSError:
            pass  # it died at once: its exit is reaped like any other
        return proc

    def helper_pids(self) -> set[int]:
        return set()


class Hooks(Protocol):
    """What the supervisor reports to and asks of the pool."""

    def plan_spawns(self) -> tuple[tuple[SpawnSpec, ...], float | None]: ...

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
        reap_orphans: bool = False,
        reap_timeout: float = 5.0,
    ) -> None:
        self.launcher = launcher
        self.hooks = hooks
        self.grace = grace
        self.tick = tick
        self.clock = clock
        self.reap_orphans = reap_orphans
        self.reap_timeout = reap_timeout
        self.orphans_reaped = 0
        self._procs: dict[PoolId, Process] = {}
        self._kill_at: dict[PoolId, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_beat = clock()
        self._launching_since: float | None = None
        self._thread = threading.Thread(target=self._loop, name="hp-supervisor", daemon=True)

    def start(self) -> None:
        self._last_beat = self.clock()
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def beat_age(self) -> float:
        """Seconds since the loop last completed a pass (liveness).

        A launch in progress counts as a beat for up to ``LAUNCH_BOUND``: the first
        fork server imports Beam (and PyFlink) inside ``launch``, which can take tens
        of seconds on a busy node, and launches end within their own timeouts.
        """
        now = self.clock()
        since = self._launching_since
        if since is not None and now - since < LAUNCH_BOUND:
            return 0.0
        return now - self._last_beat

    def pid_of(self, pool_id: PoolId) -> int | None:
        with self._lock:
            proc = self._procs.get(pool_id)
        return proc.pid if proc else None

    def pids(self) -> dict[PoolId, int]:
        """Every tracked worker's pid (for status and /proc sampling)."""
        with self._lock:
            return {pool_id: proc.pid for pool_id, proc in self._procs.items()}

    def request_stop(self, pool_id: PoolId, sig: int = signal.SIGTERM) -> None:
        """Signals the worker now; SIGKILL follows after ``grace`` if it is still there."""
        with self._lock:
            proc = self._procs.get(pool_id)
            if proc is None:
                return
            self._kill_at.setdefault(pool_id, self.clock() + self.grace)
        _signal(proc, sig)
        self._wake.set()

    def shutdown(self, grace: float | None = None) -> None:
        """SIGTERM every child, wait ``grace``, SIGKILL the rest, reap all, stop the thread.

        Bounded: a process still there ``reap_timeout`` after SIGKILL is given up on.
        """
        grace = self.grace if grace is None else grace
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(max(5.0, grace))
            if self._thread.is_alive():
                _LOG.error("supervisor loop is stuck; shutting its workers down without it")
        with self._lock:
            procs = dict(self._procs)
        for proc in procs.values():
            _signal(proc, signal.SIGTERM)
        self._reap_until(procs, self.clock() + grace)
        for pool_id, proc in procs.items():
            _LOG.warning("worker %s (pid %d) still running after %.1fs grace: SIGKILL",
                         pool_id, proc.pid, grace)
            _signal(proc, signal.SIGKILL)
        self._reap_until(procs, self.clock() + self.reap_timeout)
        for pool_id, proc in procs.items():
            _LOG.error("worker %s (pid %d) did not go away %.0fs after SIGKILL; giving up on "
                       "it", pool_id, proc.pid, self.reap_timeout)
            self._forget(pool_id)
            self.hooks.exited(pool_id, None)
        if self.reap_orphans:
            self._reap_orphans()

    # -- the supervisor thread ----------------------------------------------

    def _loop(self) -> None:
        failures = 0
        next_orphan_scan = 0.0
        while not self._stop.is_set():
            try:
                recheck = self._pass()
                if self.reap_orphans and self.clock() >= next_orphan_scan:
                    self._reap_orphans()
                    next_orphan_scan = self.clock() + 1.0
                self._last_beat = self.clock()
                failures = 0
            except Exception:
                failures += 1
                pause = min(5.0, 0.1 * 2 ** min(failures, 6))
                _LOG.exception("supervisor pass failed (%d in a row); retrying in %.1fs",
                               failures, pause)
                self._wake.wait(pause)
                self._wake.clear()
                continue
            timeout = self.tick
            if recheck is not None:
                timeout = max(0.0, min(timeout, recheck - self.clock()))
            self._wake.wait(timeout)
            self._wake.clear()

    def _pass(self) -> float | None:
        specs, recheck = self.hooks.plan_spawns()
        for spec in specs:
            self._spawn(spec)
        maintain = getattr(self.launcher, "maintain", None)
        if maintain is not None:  # e.g. stop fork servers of job interpreters left idle
            maintain()
        with self._lock:
            procs = dict(self._procs)
        self._reap(procs)
        self._escalate()
        return recheck

    def _spawn(self, spec: SpawnSpec) -> None:
        self._launching_since = self.clock()
        try:
            proc = self.launcher.launch(spec)
        except OSError as exc:
            _LOG.error("could not start worker %s: %s", spec.pool_id, exc)
            self.hooks.spawn_failed(spec.pool_id, str(exc))
            return
        finally:
            self._launching_since = None
        with self._lock:
            self._procs[spec.pool_id] = proc
        self.hooks.spawned(spec.pool_id, proc.pid)

    def _reap(self, procs: dict[PoolId, Process]) -> None:
        for pool_id, proc in list(procs.items()):
            try:
                code = proc.poll()
            except Exception:  # one broken handle must not stop the others' reaping
                _LOG.exception("could not poll worker %s (pid %d)", pool_id, proc.pid)
                continue
            if code is None:
                continue
            del procs[pool_id]
            self._forget(pool_id)
            self.hooks.exited(pool_id, code)

    def _reap_until(self, procs: dict[PoolId, Process], deadline: float) -> None:
        while procs and self.clock() < deadline:
            self._reap(procs)
            if procs:
                time.sleep(0.02)

    def _forget(self, pool_id: PoolId) -> None:
        with self._lock:
            self._procs.pop(pool_id, None)
            self._kill_at.pop(pool_id, None)

    def _reap_orphans(self) -> None:
        owned = set(self.pids().values()) | self.launcher.helper_pids()
        for pid, code in reaping.reap_orphans(owned):
            self.orphans_reaped += 1
            _LOG.info("reaped orphan pid %d (exit code %d), left behind by a worker's own "
                      "process", pid, code)

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
            _signal(proc, signal.SIGKILL)


def _signal(proc: Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except OSError:
        pass  # already gone
