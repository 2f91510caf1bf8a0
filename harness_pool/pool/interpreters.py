"""A job's own interpreter: which one a stage asks for, and one fork server per interpreter.

PyFlink lets a job ship its Python (``python.archives`` with a virtual
environment, ``python.executable`` inside it). Its stages must run in that
interpreter, or a package only the job's venv has is missing. Which one a
stage wants (``job_interpreter``), from the StartWorker ``params``:

1. ``HARNESS_POOL_PYTHON``: the fast boot's real interpreter (a two-line
   wrapper in the archive sets it; see docs/dependencies.md);
2. else ``python`` (PyFlink sends ``python.executable``) when it is a path,
   relative ones resolved against ``_PYTHON_WORKING_DIR`` as the TaskManager's
   runner script does; a bare name (``python``, found on the TaskManager's
   ``PATH``) and the fast boot itself mean the pool's own interpreter;
3. an interpreter of the pool's own environment (same directory, same file
   behind it) is the pool's own: "" is returned;
4. ``scope`` (``--job-interpreters``): "archives" (default) honours only an
   interpreter inside the job's own directory (``BOOT_LOG_DIR``, the
   TaskManager's ``python-dist-*``, or ``_PYTHON_WORKING_DIR``): what
   ``python.archives`` ships. An absolute ``python.executable`` elsewhere
   (``/usr/bin/python3`` of the TaskManager's image) names a file of *another
   container* in a pod, so the pool serves it with its own interpreter, as
   before. "any" honours every other interpreter (one container, or a shared
   image); "off" never.

``InterpreterLaunchers`` is the supervisor's ``Launcher``: the pool's own
launcher for ``SpawnSpec.interpreter == ""``, else a launcher (a fork server
when the pool forks) per interpreter, created at the first stage needing it,
kept warm for later stages, and closed by ``maintain`` once it has had no
worker for ``idle_timeout`` seconds or its interpreter file is gone (the
TaskManager deletes a job's ``python-dist-*`` directory when the job ends).

Every process of every launcher starts in a private directory
(``neutral_dir``), never the sidecar's working directory (``python -m`` puts
the working directory first on ``sys.path``: a worker would import whatever
lies there). That directory holds only a link to the sidecar's own
``harness_pool`` package, so a job's interpreter runs the sidecar's worker
code (the same protocol) without having harness-pool installed; it needs
``apache-beam``, ``grpcio`` and ``protobuf`` (and ``apache-flink`` for the
pyflink flavour) of versions harness-pool supports (a job venv built with the
pool's PyFlink version has them).

Threads: ``launch``, ``maintain`` and ``helper_pids`` run on the supervisor
thread; ``interpreters`` (status) on any thread, under ``_lock``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness_pool._errors import PermanentError, printable
from harness_pool.pool.supervisor import Launcher, Process, SpawnSpec

_LOG = logging.getLogger("harness_pool.interpreters")

FAST_BOOT = "harness-pool-python"


class BadInterpreter(PermanentError):
    """The interpreter a StartWorker asks for does not exist or is not executable."""

    code = "INVALID_ARGUMENT"


def same_interpreter(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` are the same Python *environment* (a venv's ``python`` and
    ``python3``), not merely the same binary behind a venv's link."""
    a, b = os.path.abspath(a), os.path.abspath(b)
    if a == b:
        return True
    return os.path.dirname(a) == os.path.dirname(b) and os.path.realpath(a) == \
        os.path.realpath(b)


def job_interpreter(params: Mapping[str, str], own: str = sys.executable,
                    scope: str = "archives") -> str:
    """The interpreter a stage asks for ("" = the pool's own); see the module docstring."""
    if scope == "off":
        return ""
    source = "HARNESS_POOL_PYTHON"
    chosen = params.get(source, "")
    if not chosen:
        source, chosen = "python", params.get("python", "")
        if os.sep not in chosen or os.path.basename(chosen) == FAST_BOOT:
            return ""
        if not os.path.isabs(chosen):
            base = params.get("_PYTHON_WORKING_DIR", "")
            if not base:
                raise BadInterpreter(
                    f"params['python'] '{printable(chosen)}' is a relative path but "
                    "params['_PYTHON_WORKING_DIR'] is not set; give python.executable as an "
                    "absolute path or inside python.archives")
            chosen = os.path.join(base, chosen)
    chosen = os.path.abspath(chosen)
    if os.path.basename(chosen) == FAST_BOOT or same_interpreter(chosen, own):
        return ""
    if scope == "archives" and not _in_job_directory(chosen, params):
        return ""
    if not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
        raise BadInterpreter(
            f"params['{source}'] names the job's interpreter '{printable(chosen)}', which is "
            "not an executable file (with python.archives: is the virtual environment at the "
            "archive's root, and python.executable relative to the archive's name?)")
    return chosen


def _in_job_directory(path: str, params: Mapping[str, str]) -> bool:
    for key in ("BOOT_LOG_DIR", "_PYTHON_WORKING_DIR"):
        base = params.get(key, "")
        if base and path.startswith(os.path.abspath(base).rstrip(os.sep) + os.sep):
            return True
    return False


def neutral_dir() -> str:
    """A private directory to start interpreters in, holding only a link to this
    ``harness_pool`` package: every interpreter runs the sidecar's own worker code."""
    path = tempfile.mkdtemp(prefix="harness-pool-cwd-")
    os.symlink(Path(__file__).resolve().parent.parent, os.path.join(path, "harness_pool"))
    return path


#: Makes the launcher of one interpreter: (python, cwd) → Launcher.
LauncherFactory = Callable[[str, str], Launcher]


class _JobLauncher:
    def __init__(self, python: str, launcher: Launcher) -> None:
        self.python = python
        self.launcher = launcher
        self.last_used = time.monotonic()
        self.procs: list[Process] = []


class InterpreterLaunchers:
    """The pool's own launcher plus one per job interpreter (see the module docstring)."""

    def __init__(self, factory: LauncherFactory, own_python: str = sys.executable,
                 idle_timeout: float = 300.0, check_every: float = 1.0) -> None:
        self.factory = factory
        self.idle_timeout = idle_timeout
        self.check_every = check_every
        self._jobs: dict[str, _JobLauncher] = {}
        self._lock = threading.Lock()
        self._cwd = neutral_dir()
        self._next_check = 0.0
        self.own = factory(own_python, self._cwd)

    # -- Launcher -------------------------------------------------------------

    def launch(self, spec: SpawnSpec) -> Process:
        if not spec.interpreter:
            return self.own.launch(spec)
        job = self._jobs.get(spec.interpreter)
        if job is None:
            _LOG.info("starting a launcher for the job interpreter %s (first stage that needs "
                      "it)", spec.interpreter)
            job = _JobLauncher(spec.interpreter, self.factory(spec.interpreter, self._cwd))
            with self._lock:
                self._jobs[spec.interpreter] = job
        job.last_used = time.monotonic()
        try:
            proc = job.launcher.launch(spec)
        except OSError as exc:
            self._close(job, "it could not start a worker")
            raise OSError(f"the job interpreter {spec.interpreter} could not start a worker: "
                          f"{exc} (it must import apache_beam, grpc and protobuf of versions "
                          "harness-pool supports; see docs/dependencies.md)") from exc
        job.procs.append(proc)
        return proc

    def helper_pids(self) -> set[int]:
        pids = set(self.own.helper_pids())
        for job in list(self._jobs.values()):
            pids |= job.launcher.helper_pids()
        return pids

    def maintain(self) -> None:
        """Closes job launchers idle for ``idle_timeout`` or whose interpreter is gone."""
        maintain = getattr(self.own, "maintain", None)
        if maintain is not None:
            maintain()
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.check_every
        for job in list(self._jobs.values()):
            job.procs = [p for p in job.procs if p.poll() is None]
            if job.procs:
                job.last_used = now
                continue
            if not os.path.exists(job.python):
                self._close(job, "its interpreter is gone (the job ended)")
            elif now - job.last_used >= self.idle_timeout:
                self._close(job, f"it had no worker for {self.idle_timeout:g}s")

    @property
    def zygote_pid(self) -> int | None:
        """The pool's own fork server (with ``--spawn fork``), for status and tests."""
        pid = getattr(self.own, "zygote_pid", None)
        return int(pid) if pid is not None else None

    def interpreters(self) -> list[str]:
        with self._lock:
            return sorted(self._jobs)

    def close(self, timeout: float = 10.0) -> None:
        for job in list(self._jobs.values()):
            self._close(job, "the sidecar is stopping", timeout)
        close = getattr(self.own, "close", None)
        if close is not None:
            close(timeout)
        shutil.rmtree(self._cwd, ignore_errors=True)

    def _close(self, job: _JobLauncher, why: str, timeout: float = 10.0) -> None:
        with self._lock:
            self._jobs.pop(job.python, None)
        close: Any = getattr(job.launcher, "close", None)
        if close is not None:
            close(timeout)
        _LOG.info("stopped the launcher of job interpreter %s: %s", job.python, why)
