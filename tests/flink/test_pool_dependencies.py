"""PyFlink job environments on pooled workers, on the real local cluster (issue 9).

The shared ``pool_on_flink`` cluster: a TaskManager whose Python stages the
sidecar serves (the fast boot as ``python.executable``). Jobs run the
``probe_imports.py`` UDF, which reports what it can import and which Python
it runs in:

- ``python.requirements`` (``-pyreq req.txt#cache``, no index): the
  TaskManager pip-installs into its prefix, the pooled worker sees it;
- ``python.archives`` with the job's own virtual environment and
  ``python.executable`` inside it: the stage runs in *that* interpreter (a
  fork server of its own, stopped once the job is gone);
- a requirement that drags in another protobuf: a clear StartWorker error;
- a later job with no dependencies sees none of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path
from typing import Any

import pytest

from harness_pool import boot
from tests.deps.helpers import make_wheel, wait_for
from tests.flink_pool_fixtures import JOBS, PoolOnFlink

pytestmark = [pytest.mark.slow, pytest.mark.flink]

PROBE = JOBS / "probe_imports.py"
MODULES = ["reqpkg", "venvonly"]


def probes(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("probe-*.json"))]


def run_probe(env: PoolOnFlink, name: str, options: list[str]) -> tuple[str, list[dict]]:
    out = env.out_dir(name)
    job = env.cluster.run_python_job(PROBE, [str(out), *MODULES], options=options)
    state = env.wait_job(job, timeout=300)
    return state, probes(out)


@pytest.fixture(scope="module")
def job_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job's own virtual environment, archived as ``python.archives`` wants it (the venv
    at the archive's root): the pool's packages (PyFlink) through a .pth, plus a module
    only this venv has."""
    root = tmp_path_factory.mktemp("job-venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "pool-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (site / "venvonly.py").write_text("VALUE = 'only-in-the-job-venv'\n")
    # The fast boot for this venv's own interpreter (docs/dependencies.md): python.executable
    # = venv/bin/hp-python sends StartWorker without imports and names the venv's python.
    wrapper = venv / "bin" / "hp-python"
    wrapper.write_text('#!/bin/sh\nHARNESS_POOL_PYTHON="$(cd "$(dirname "$0")" && pwd)/python" '
                       f'exec {boot.executable()} "$@"\n')
    wrapper.chmod(0o755)
    archive = root / "venv.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for entry in sorted(venv.iterdir()):
            tar.add(entry, arcname=entry.name)
    return archive


def test_python_requirements_are_seen_by_the_pooled_worker(
        pool_on_flink: PoolOnFlink, tmp_path: Path) -> None:
    cache = tmp_path / "req-cache"
    make_wheel(cache, "reqpkg", "2.0")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("reqpkg==2.0\n")
    state, seen = run_probe(pool_on_flink, "pyreq", ["-pyreq", f"{requirements}#{cache}"])
    assert state == "FINISHED"
    assert seen and all(p["modules"] == {"reqpkg": "reqpkg-2.0", "venvonly": "absent"}
                        for p in seen), seen


def test_a_requirement_dragging_another_protobuf_is_a_clear_error(
        pool_on_flink: PoolOnFlink, tmp_path: Path) -> None:
    env = pool_on_flink
    cache = tmp_path / "req-cache"
    make_wheel(cache, "protobuf", "4.25.3")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("protobuf==4.25.3\n")
    assert env.sidecar is not None
    before = {r.runner_worker_id for r in env.sidecar.status().assignments}
    state, seen = run_probe(env, "pyreq-conflict", ["-pyreq", f"{requirements}#{cache}"])
    assert state == "FAILED" and not seen
    refused = [r for r in env.sidecar.status().assignments
               if r.runner_worker_id not in before and r.outcome == "start_failed"]
    assert refused, "no StartWorker was refused"
    detail = refused[0].detail
    for text in ("protobuf 4.25.3", "already imported protobuf", "python.requirements"):
        assert text in detail, f"{text!r} not in {detail!r}"


@pytest.mark.parametrize("executable", ["venv/bin/python", "venv/bin/hp-python"])
def test_a_job_with_its_own_interpreter_runs_its_stages_in_it(
        pool_on_flink: PoolOnFlink, job_venv: Path, executable: str) -> None:
    """``python.executable`` the venv's python (PyFlink's boot in it), or the fast-boot
    wrapper (``HARNESS_POOL_PYTHON`` names the venv's python)."""
    env = pool_on_flink
    assert env.sidecar is not None
    state, seen = run_probe(env, f"own-venv-{Path(executable).name}",
                            ["-pyarch", f"{job_venv}#venv", "-pyexec", executable])
    assert state == "FINISHED"
    assert seen, "the UDF never ran"
    for report in seen:
        assert report["modules"]["venvonly"] == "only-in-the-job-venv", report
        assert report["prefix"].endswith("/python-archives/venv"), report
    # The job is over and its directory gone: its fork server is stopped.
    sidecar = env.sidecar
    wait_for(lambda: not sidecar.status().env_cache.interpreters, 60,
             "the job interpreter's fork server to stop")


def test_a_later_job_without_dependencies_sees_none(pool_on_flink: PoolOnFlink) -> None:
    state, seen = run_probe(pool_on_flink, "no-deps", [])
    assert state == "FINISHED"
    assert seen and all(p["modules"] == {"reqpkg": "absent", "venvonly": "absent"}
                        for p in seen), seen
    assert all(p["prefix"] == sys.prefix for p in seen), seen
