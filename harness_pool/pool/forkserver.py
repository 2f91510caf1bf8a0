"""Fork server: import Beam (and PyFlink) once, fork a fresh worker per pool id.

A cold worker costs about a second of CPU to import Beam (more with PyFlink);
on a 2-core TaskManager pod, four replacements warming while four stages run
take CPU from those stages. The fork server (a *zygote*) imports everything
once; each new worker is a ``fork()`` of it: milliseconds of CPU, and the
imported modules' pages are shared between workers.

Fork safety: the zygote is single-threaded and never creates a gRPC channel
or server (importing ``grpc`` starts no threads); each child creates its own
channels after the fork.

Protocol: line-delimited JSON on two pipes of their own (never the zygote's
stdout, where any import may print): sidecar → zygote on ``--command-fd``,
zygote → sidecar on ``--reply-fd``. ``{"op": "spawn", "pool_id", "token"}`` →
``{"op": "spawned", "pool_id", "pid"}`` or ``{"op": "spawn_failed", ...}``;
the zygote reaps its children and reports ``{"op": "exited", "pid", "code"}``
(negative code: killed by that signal). Its first line is ``{"op": "ready"}``.
When the command pipe closes, the zygote exits. The zygote is a child
subreaper: orphans its workers leave behind are re-parented to it and reaped.

Sidecar side: each ``ForkServer`` is one zygote process, a *generation* of
workers: it keeps its own children and their exit codes. When a zygote dies,
``ForkServerLauncher`` starts a new generation for new workers; workers of the
old one keep being tracked through their own ``ForkServer`` (re-parented
orphans are reaped by pid when the sidecar adopted them, else seen gone or a
zombie in /proc). Several launchers (one per interpreter) may coexist.

Threads: one reader thread per ``ForkServer`` owns its reply pipe; a line it
cannot read is logged and skipped, an error ends the generation (logged),
never the sidecar. ``_lock`` guards the exit table and the pending replies.
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

from harness_pool._errors import printable
from harness_pool.pool import reaping
from harness_pool.pool.supervisor import SpawnSpec

_LOG = logging.getLogger("harness_pool.forkserver")

#: A child seen as a zombie this long (its zygote alive but not reaping it) counts as exited.
ZOMBIE_GRACE = 2.0


# -- the zygote (runs in its own process) --------------------------------------


def _write(out: IO[str], **message: Any) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _child(sidecar: str, spec: dict[str, str], flavor: str, fds: tuple[int, int]) -> None:
    from harness_pool.pool import worker

    code = 70
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for fd in fds:  # the zygote's pipes are not ours
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        worker.setup_logging(spec["pool_id"])
        code = worker.run(sidecar, spec["pool_id"], flavor, spec["token"],
                          started_at=time.monotonic())
    except BaseException:
        traceback.print_exc()
    finally:
        worker.exit_now(code)


def zygote(sidecar: str, flavor: str, command_fd: int, reply_fd: int) -> int:
    t0 = time.monotonic()
    reaping.become_subreaper()
    from harness_pool.pool import worker

    worker._import_harness(flavor)
    worker.jobenv.warm_facts()  # once per fork server; every forked worker inherits it
    out = os.fdopen(reply_fd, "w")
    _write(out, op="ready", pid=os.getpid(), import_seconds=time.monotonic() - t0)
    children: set[int] = set()
    buffer = b""
    while True:
        readable, _, _ = select.select([command_fd], [], [], 0.05)
        if readable:
            data = os.read(command_fd, 65536)
            if not data:
                return 0  # the sidecar closed our command pipe: it is shutting down
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    request = json.loads(line)
                    spec = {"pool_id": str(request["pool_id"]), "token": str(request["token"])}
                except (ValueError, KeyError, TypeError):
                    print(f"fork server: ignored a bad command {line[:80]!r}", file=sys.stderr)
                    continue
                try:
                    pid = os.fork()
                except OSError as exc:
                    _write(out, op="spawn_failed", pool_id=spec["pool_id"], error=str(exc))
                    continue
                if pid == 0:
                    _child(sidecar, spec, flavor, (command_fd, reply_fd))
                children.add(pid)
                _write(out, op="spawned", pool_id=spec["pool_id"], pid=pid)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in children:  # else: an orphan of a worker, re-parented here
                children.discard(pid)
                _write(out, op="exited", pid=pid, code=os.waitstatus_to_exitcode(status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness-pool forkserver",
                                     description="(internal) fork server of pooled workers")
    parser.add_argument("--sidecar", required=True)
    parser.add_argument("--flavor", choices=("beam", "pyflink"), default="beam")
    parser.add_argument("--command-fd", type=int, required=True)
    parser.add_argument("--reply-fd", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return zygote(args.sidecar, args.flavor, args.command_fd, args.reply_fd)
    except BrokenPipeError:
        return 0  # the sidecar is gone


# -- the sidecar side -----------------------------------------------------------


class ForkedProcess:
    """A worker forked by a zygote: signalled by pid, exit code from its generation."""

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid = pid
        self._server = server
        self._ticks = reaping.start_ticks(pid)
        self._code: int | None = None

    def poll(self) -> int | None:
        if self._code is None:
            self._code = self._server.exit_code(self.pid, self._ticks)
        return self._code

    def send_signal(self, sig: int) -> None:
        if (self._code is not None or self._server.has_exit(self.pid)
                or not reaping.is_same(self.pid, self._ticks)):
            return  # exited (maybe a zombie, maybe its pid reused): nothing to signal
        os.kill(self.pid, sig)


class ForkServer:
    """One zygote process and the workers it forked (one generation)."""

    def __init__(self, sidecar: str, flavor: str, python: str, generation: int,
                 cwd: str | None = None) -> None:
        self.generation = generation
        self.flavor = flavor
        cmd_r, cmd_w = os.pipe()
        reply_r, reply_w = os.pipe()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            self.proc = subprocess.Popen(
                [python, "-m", "harness_pool.pool.forkserver", "--sidecar", sidecar,
                 "--flavor", flavor, "--command-fd", str(cmd_r), "--reply-fd", str(reply_w)],
                stdin=subprocess.DEVNULL, pass_fds=(cmd_r, reply_w), env=env, cwd=cwd)
        except OSError:
            for fd in (cmd_r, cmd_w, reply_r, reply_w):
                os.close(fd)
            raise
        os.close(cmd_r)
        os.close(reply_w)
        self._commands = os.fdopen(cmd_w, "w")
        self._replies = os.fdopen(reply_r, "r", errors="replace")
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._ready = threading.Event()
        self.ended = threading.Event()  # the reply pipe closed: every report has been read
        self._pending: dict[str, dict[str, Any]] = {}
        self._exits: dict[int, int] = {}
        self._children: set[int] = set()
        self._zombie_since: dict[int, float] = {}
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"hp-forkserver-{generation}")
        self._reader.start()

    @property
    def alive(self) -> bool:
        return not self.ended.is_set() and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if self.ended.is_set() or time.monotonic() > deadline:
                return False
        return True

    def fork(self, spec: SpawnSpec, timeout: float = 30.0) -> ForkedProcess:
        command = json.dumps({"op": "spawn", "pool_id": spec.pool_id, "token": spec.token})
        with self._lock:
            self._pending.pop(spec.pool_id, None)
        try:
            self._commands.write(command + "\n")
            self._commands.flush()
        except (OSError, ValueError) as exc:
            raise OSError(f"fork server (pid {self.proc.pid}) is gone: {exc}") from exc
        deadline = time.monotonic() + timeout
        with self._lock:
            while spec.pool_id not in self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.ended.is_set():
                    raise OSError(f"fork server (pid {self.proc.pid}) did not fork "
                                  f"{spec.pool_id}")
                self._cond.wait(min(remaining, 0.5))
            reply = self._pending.pop(spec.pool_id)
            if reply.get("op") != "spawned":
                raise OSError(f"fork server could not fork {spec.pool_id}: "
                              f"{printable(str(reply.get('error')))}")
        return ForkedProcess(int(reply["pid"]), self)

    def has_exit(self, pid: int) -> bool:
        with self._lock:
            return pid in self._exits

    def exit_code(self, pid: int, ticks: int | None) -> int | None:
        """The child's exit code once it is gone (once: the caller keeps it); None while
        it runs."""
        with self._lock:
            if pid in self._exits:
                self._children.discard(pid)
                self._zombie_since.pop(pid, None)
                return self._exits.pop(pid)
            zygote_reporting = not self.ended.is_set()
        if zygote_reporting:
            # The zygote reaps and reports; only a child stuck as a zombie past a
            # grace (a stopped or wedged zygote) is taken as exited here.
            if reaping.state(pid) != "Z":
                self._zombie_since.pop(pid, None)
                return None
            first = self._zombie_since.setdefault(pid, time.monotonic())
            if time.monotonic() - first < ZOMBIE_GRACE:
                return None
            return self._lost(pid, "is a zombie its fork server does not reap")
        # The zygote is gone and every report is read: the child is an orphan.
        ours, code = reaping.wait_adopted(pid)
        if ours:
            if code is None:
                return None
            with self._lock:
                self._children.discard(pid)
            return code
        if reaping.is_same(pid, ticks):
            return None  # alive under another parent; it will exit or be stopped
        return self._lost(pid, "is gone with its fork server")

    def _lost(self, pid: int, why: str) -> int:
        with self._lock:
            self._children.discard(pid)
            self._zombie_since.pop(pid, None)
        _LOG.warning("worker pid %d of fork server generation %d %s; exit code unknown",
                     pid, self.generation, why)
        return -1

    def close(self, timeout: float = 10.0) -> None:
        """Ends the zygote (its remaining children are the supervisor's to stop)."""
        try:
            self._commands.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout)

    def _read(self) -> None:
        try:
            for line in self._replies:
                try:
                    message = json.loads(line)
                    op = message["op"]
                except (ValueError, KeyError, TypeError):
                    _LOG.warning("fork server (pid %d) sent a line that is not a reply; "
                                 "ignored: %s", self.proc.pid, printable(line.strip()))
                    continue
                self._handle(op, message)
        except Exception:
            _LOG.exception("reading fork server (pid %d) replies failed; this generation "
                           "ends, a new fork server takes over", self.proc.pid)
        finally:
            with self._lock:
                self.ended.set()
                self._cond.notify_all()
            try:
                self._replies.close()
            except OSError:
                pass

    def _handle(self, op: str, message: dict[str, Any]) -> None:
        if op == "ready":
            _LOG.info("fork server (pid %s, %s flavour, generation %d) imported everything "
                      "in %.2fs", message.get("pid"), self.flavor, self.generation,
                      float(message.get("import_seconds", 0.0)))
            self._ready.set()
            return
        with self._lock:
            if op == "exited":
                pid = int(message["pid"])
                if pid in self._children:
                    self._exits[pid] = int(message["code"])
            elif op in ("spawned", "spawn_failed"):
                if op == "spawned":  # before its "exited" can be read
                    self._children.add(int(message["pid"]))
                self._pending[str(message["pool_id"])] = message
                self._cond.notify_all()


class ForkServerLauncher:
    """Starts workers by asking a zygote to fork them; replaces a zygote that died."""

    def __init__(self, sidecar: str, flavor: str, python: str = sys.executable,
                 start_timeout: float = 120.0, cwd: str | None = None) -> None:
        self.sidecar = sidecar
        self.flavor = flavor
        self.python = python
        self.start_timeout = start_timeout
        self.cwd = cwd  # a neutral directory (interpreters.neutral_dir), never the sidecar's
        self._current: ForkServer | None = None
        self._retired: list[ForkServer] = []
        self._generation = 0

    @property
    def zygote_pid(self) -> int | None:
        return self._current.proc.pid if self._current is not None else None

    # -- Launcher -------------------------------------------------------------

    def launch(self, spec: SpawnSpec) -> ForkedProcess:
        server = self._ensure()
        try:
            return server.fork(spec)
        except OSError:
            if not server.ended.wait(2.0) and server.alive:
                raise
        # The zygote died between the liveness check and the command (a SIGKILLed
        # process can look alive for a moment: /proc shows it a zombie before
        # waitpid can reap it). Once more, on a new generation.
        return self._ensure().fork(spec)

    def helper_pids(self) -> set[int]:
        servers = [s for s in (self._current, *self._retired) if s is not None]
        return {s.proc.pid for s in servers if s.proc.returncode is None}

    def close(self, timeout: float = 10.0) -> None:
        """Ends every zygote (their remaining children are the supervisor's to stop first)."""
        for server in [s for s in (self._current, *self._retired) if s is not None]:
            server.close(timeout)
        self._current, self._retired = None, []

    # -- internals ------------------------------------------------------------

    def _ensure(self) -> ForkServer:
        current = self._current
        if current is not None and current.alive:
            return current
        if current is not None:
            _LOG.warning("fork server (pid %d, generation %d) exited with %s; starting a new "
                         "one (its workers stay tracked)", current.proc.pid,
                         current.generation, current.proc.poll())
            current.close(1.0)
            self._retired.append(current)
        self._retired = [s for s in self._retired if s.proc.poll() is None]
        self._generation += 1
        server = ForkServer(self.sidecar, self.flavor, self.python, self._generation, self.cwd)
        self._current = server
        if not server.wait_ready(self.start_timeout):
            self._current = None
            server.proc.kill()
            server.close(5.0)
            code = server.proc.returncode
            raise OSError(f"fork server ({self.python}) did not get ready within "
                          f"{self.start_timeout:g}s" if code in (None, -9) else
                          f"fork server ({self.python}) exited with code {code} before it was "
                          "ready (its error is in the sidecar's log)")
        return server


if __name__ == "__main__":
    sys.exit(main())
