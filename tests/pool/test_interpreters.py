"""A job's own interpreter: which one a stage asks for, launchers per interpreter, the
pool's on-demand workers for it (issue 9)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness_pool.pool.core import PoolCore, WorkerState
from harness_pool.pool.interpreters import (
    FAST_BOOT,
    BadInterpreter,
    InterpreterLaunchers,
    job_interpreter,
)
from harness_pool.pool.supervisor import SpawnSpec
from tests.sidecar_fixtures import pid_alive


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_the_pools_own_interpreter_in_any_spelling_is_empty() -> None:
    own = sys.executable
    assert job_interpreter({}, own) == ""
    assert job_interpreter({"python": "python"}, own) == ""  # a bare name: TaskManager's PATH
    assert job_interpreter({"python": f"/opt/x/bin/{FAST_BOOT}"}, own) == ""
    assert job_interpreter({"python": own}, own) == ""
    assert job_interpreter({"HARNESS_POOL_PYTHON": own}, own) == ""
    sibling = Path(own).with_name("python3")
    if sibling.exists() and os.path.realpath(sibling) == os.path.realpath(own):
        assert job_interpreter({"python": str(sibling)}, own) == ""


def test_a_job_interpreter_is_resolved_against_the_working_dir(tmp_path: Path) -> None:
    venv_python = _executable(tmp_path / "python-archives" / "venv" / "bin" / "python")
    params = {"python": "venv/bin/python", "_PYTHON_WORKING_DIR": str(tmp_path / "python-archives")}
    assert job_interpreter(params) == str(venv_python)
    # HARNESS_POOL_PYTHON (the fast boot's wrapper) wins over python.executable
    other = _executable(tmp_path / "python-archives" / "other" / "bin" / "python")
    assert job_interpreter({**params, "HARNESS_POOL_PYTHON": str(other)}) == str(other)


def test_only_interpreters_inside_the_job_directory_by_default(tmp_path: Path) -> None:
    """/usr/bin/python3 of the TaskManager's image is another container's file: the pool's
    own interpreter serves it unless --job-interpreters any."""
    job_dir = tmp_path / "python-dist-1"
    inside = _executable(job_dir / "python-archives" / "venv" / "bin" / "python")
    outside = _executable(tmp_path / "usr" / "bin" / "python3")
    params = {"BOOT_LOG_DIR": str(job_dir)}
    assert job_interpreter({**params, "python": str(inside)}) == str(inside)
    assert job_interpreter({**params, "python": str(outside)}) == ""
    assert job_interpreter({**params, "python": str(outside)}, scope="any") == str(outside)
    assert job_interpreter({**params, "python": str(inside)}, scope="off") == ""


def test_bad_interpreters_are_named(tmp_path: Path) -> None:
    with pytest.raises(BadInterpreter, match=r"params\['python'\] 'venv/bin/python' is a "
                       r"relative path but params\['_PYTHON_WORKING_DIR'\] is not set"):
        job_interpreter({"python": "venv/bin/python"})
    with pytest.raises(BadInterpreter, match=r"params\['HARNESS_POOL_PYTHON'\] names the job's "
                       r"interpreter '.*/nope/python', which is not an executable file"):
        job_interpreter({"HARNESS_POOL_PYTHON": str(tmp_path / "nope" / "python"),
                         "BOOT_LOG_DIR": str(tmp_path)})
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(BadInterpreter, match="not an executable file"):
        job_interpreter({"python": str(plain)}, scope="any")


class _Sleeper:
    """A launcher of tiny real processes, recording its interpreter and working dir."""

    made: list[tuple[str, str]] = []

    def __init__(self, python: str, cwd: str) -> None:
        self.python, self.cwd, self.closed = python, cwd, False
        self.procs: list[subprocess.Popen[bytes]] = []
        _Sleeper.made.append((python, cwd))

    def launch(self, spec: SpawnSpec) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["sleep", "30"], cwd=self.cwd)
        self.procs.append(proc)
        return proc

    def helper_pids(self) -> set[int]:
        return set()

    def close(self, timeout: float = 10.0) -> None:
        self.closed = True


def test_launchers_per_interpreter_start_on_demand_and_stop_when_idle_or_gone(
        tmp_path: Path) -> None:
    _Sleeper.made.clear()
    job_python = _executable(tmp_path / "dist" / "venv" / "bin" / "python")
    launchers = InterpreterLaunchers(_Sleeper, idle_timeout=0.5, check_every=0.0)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cwd = _Sleeper.made[0][1]
        assert _Sleeper.made == [(sys.executable, cwd)]
        assert sorted(os.listdir(cwd)) == ["harness_pool"]  # neutral: only our package
        assert Path(cwd, "harness_pool", "pool", "worker.py").is_file()
        procs.append(launchers.launch(SpawnSpec("w-1", "t")))  # type: ignore[arg-type]
        procs.append(launchers.launch(SpawnSpec("w-2", "t", str(job_python))))  # type: ignore
        procs.append(launchers.launch(SpawnSpec("w-3", "t", str(job_python))))  # type: ignore
        assert [m[0] for m in _Sleeper.made] == [sys.executable, str(job_python)]
        assert launchers.interpreters() == [str(job_python)]
        launchers.maintain()
        assert launchers.interpreters() == [str(job_python)], "stopped while it had workers"
        for proc in procs[1:]:
            proc.kill()
            proc.wait()
        time.sleep(0.6)
        launchers.maintain()
        assert launchers.interpreters() == [], "an idle job interpreter was kept"
        # started again at the next stage; its directory vanishing stops it too
        procs.append(launchers.launch(SpawnSpec("w-4", "t", str(job_python))))  # type: ignore
        procs[-1].kill()
        procs[-1].wait()
        job_python.unlink()
        launchers.idle_timeout = 3600
        launchers.maintain()
        assert launchers.interpreters() == []
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        launchers.close()
    assert not Path(cwd).exists()
    assert not [p for p in procs if pid_alive(p.pid)]


def test_core_spawns_job_interpreter_workers_on_demand_only() -> None:
    core = PoolCore(target_idle=1, max_processes=4)
    own = core.plan_spawns(0.0).spawn
    assert len(own) == 1 and core.workers[own[0]].interpreter == ""
    core.demand["/venv/bin/python"] = 2
    extra = core.plan_spawns(0.0).spawn
    assert [core.workers[i].interpreter for i in extra] == ["/venv/bin/python"] * 2
    assert core.plan_spawns(0.0).spawn == ()  # covered by the two starting
    for i in (*own, *extra):
        core.issue(i, "t")
        core.attach(i, 0, "t", 1.0)
    assert core.claim("stage-a", 2.0) is not None  # the pool's own worker
    got = core.claim("stage-b", 2.0, "/venv/bin/python")
    assert got is not None and got.interpreter == "/venv/bin/python"
    assert not core.can_serve()  # job-interpreter workers never count as the warm reserve
    core.demand["/venv/bin/python"] = 0
    assert [w.pool_id for w in core.surplus("/venv/bin/python")] == [extra[1]]
    # a job interpreter's worker dying cold never backs off the pool's own spawning
    core.demand["/bad/python"] = 1
    (bad,) = [i for i in core.plan_spawns(3.0).spawn if core.workers[i].interpreter]
    core.exited(bad, 1, 3.0)
    assert core.consecutive_crashes == 0
    assert core.workers[bad].state is WorkerState.EXITED
