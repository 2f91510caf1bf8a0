"""Fork server: import Beam (and PyFlink) once, fork a fresh worker per pool id.

A cold worker costs about a second of CPU to import Beam (more with PyFlink);
on a 2-core TaskManager pod, four replacements warming while four stages run
take CPU from those stages. The fork server (a *zygote*) imports everything
once; each new worker is a ``fork()`` of it: milliseconds of CPU, and the
imported modules' pages are shared between workers.

Fork safety: the zygote is single-threaded and never creates a gRPC channel
or server (importing ``grpc`` starts no threads); each child creates its own
channels after the fork.

Protocol (line-delimited JSON; sidecar → zygote on its stdin, zygote →
sidecar on its stdout): ``{"op": "spawn", "pool_id": ...}`` →
``{"op": "spawned", "pool_id": ..., "pid": ...}`` or ``{"op": "spawn_failed",
...}``; the zygote reaps its children and reports ``{"op": "exited", "pid":
..., "code": ...}`` (negative code: killed by that signal). Its first line is
``{"op": "ready", ...}``. When its stdin closes, the zygote exits.

Sidecar side: ``ForkServerLauncher`` is a ``Launcher`` (see supervisor.py);
its ``ForkedProcess`` handles poll for exit codes reported by the zygote.
Threads: one reader thread per launcher owns the zygote's stdout; ``_lock``
guards the exit table and the pending spawns.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import IO, Any

from harness_pool.pool.core import PoolId

_LOG = logging.getLogger("harness_pool.forkserver")


# -- the zygote (runs in its own process) --------------------------------------


def _write(out: IO[str], **message: Any) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _child(sidecar: str, pool_id: str, flavor: str) -> None:
    from harness_pool.pool import worker

    code = 70
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)  # the zygote's command pipe is not ours
        os.dup2(2, 1)  # nor is its reply pipe: stdout goes to stderr
        sys.stdout = os.fdopen(1, "w", buffering=1)
        worker.setup_logging(pool_id)
        code = worker.run(sidecar, pool_id, flavor, started_at=time.monotonic())
    except BaseException:
        traceback.print_exc()
    finally:
        worker.exit_now(code)


def zygote(sidecar: str, flavor: str) -> int:
    t0 = time.monotonic()
    from harness_pool.pool import worker

    worker._import_harness(flavor)
    out = sys.stdout
    _write(out, op="ready", pid=os.getpid(), import_seconds=time.monotonic() - t0)
    buffer = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.05)
        if readable:
            data = os.read(0, 65536)
            if not data:
                return 0  # the sidecar closed our stdin: it is shutting down
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pool_id = request["pool_id"]
                try:
                    pid = os.fork()
                except OSError as exc:
                    _write(out, op="spawn_failed", pool_id=pool_id, error=str(exc))
                    continue
                if pid == 0:
                    _child(sidecar, pool_id, flavor)
                _write(out, op="spawned", pool_id=pool_id, pid=pid)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            _write(out, op="exited", pid=pid, code=os.waitstatus_to_exitcode(status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness-pool forkserver",
                                     description="(internal) fork server of pooled workers")
    parser.add_argument("--sidecar", required=True)
    parser.add_argument("--flavor", choices=("beam", "pyflink"), default="beam")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return zygote(args.sidecar, args.flavor)


# -- the sidecar side -----------------------------------------------------------


class ForkedProcess:
    """A worker forked by the zygote: signalled by pid, exit code from the zygote."""

    def __init__(self, pid: int, server: ForkServerLauncher) -> None:
        self.pid = pid
        self._server = server

    def poll(self) -> int | None:
        return self._server.exit_code(self.pid)

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)


class ForkServerLauncher:
    """Starts workers by asking a zygote process to fork them."""

    def __init__(self, sidecar: str, flavor: str, python: str = sys.executable,
                 start_timeout: float = 120.0) -> None:
        self.sidecar = sidecar
        self.flavor = flavor
        self.python = python
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._exits: dict[int, int] = {}
        self._children: set[int] = set()
        self._replies: dict[str, dict[str, Any]] = {}
        self._reply = threading.Condition(self._lock)

    # -- Launcher -------------------------------------------------------------

    def launch(self, pool_id: PoolId) -> ForkedProcess:
        proc = self._ensure_zygote()
        with self._lock:
            self._replies.pop(pool_id, None)
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"op": "spawn", "pool_id": pool_id}) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise OSError(f"fork server (pid {proc.pid}) is gone: {exc}") from exc
        deadline = time.monotonic() + 30
        with self._lock:
            while pool_id not in self._replies:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or proc.poll() is not None:
                    raise OSError(f"fork server (pid {proc.pid}) did not fork {pool_id}")
                self._reply.wait(min(remaining, 0.5))
            reply = self._replies.pop(pool_id)
            if reply["op"] != "spawned":
                raise OSError(f"fork server could not fork {pool_id}: {reply.get('error')}")
            self._children.add(reply["pid"])
        return ForkedProcess(reply["pid"], self)

    def exit_code(self, pid: int) -> int | None:
        with self._lock:
            if pid in self._exits:
                self._children.discard(pid)
                return self._exits.pop(pid)
            zygote_alive = self._proc is not None and self._proc.poll() is None
        if zygote_alive or _alive(pid):
            return None
        return -1  # the zygote died and the child is gone: its code is lost

    def close(self, timeout: float = 10.0) -> None:
        """Ends the zygote (its remaining children are the supervisor's to stop first)."""
        proc = self._proc
        if proc is None:
            return
        if proc.stdin:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._proc = None

    # -- internals ------------------------------------------------------------

    def _ensure_zygote(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            _LOG.warning("fork server (pid %d) exited with %s; starting a new one",
                         self._proc.pid, self._proc.returncode)
        self._ready.clear()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(
            [self.python, "-m", "harness_pool.pool.forkserver", "--sidecar", self.sidecar,
             "--flavor", self.flavor],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        threading.Thread(target=self._read, args=(self._proc,), name="hp-forkserver-reader",
                         daemon=True).start()
        if not self._ready.wait(self.start_timeout):
            proc, self._proc = self._proc, None
            proc.kill()
            proc.wait()
            raise OSError(f"fork server did not get ready within {self.start_timeout:g}s")
        return self._proc

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            message = json.loads(line)
            op = message["op"]
            if op == "ready":
                _LOG.info("fork server (pid %d, %s flavour) imported everything in %.2fs",
                          message["pid"], self.flavor, message["import_seconds"])
                self._ready.set()
                continue
            with self._lock:
                if op == "exited":
                    self._exits[message["pid"]] = message["code"]
                else:
                    self._replies[message["pool_id"]] = message
                    self._reply.notify_all()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    sys.exit(main())
