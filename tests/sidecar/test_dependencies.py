"""Job dependencies on pooled workers, end to end (issue 9).

Real Beam PortableRunner jobs (``LocalJobServicer``, EXTERNAL environment at a
real sidecar) that stage what users stage: ``--extra_package`` (an sdist built
here and a wheel), ``--requirements_file`` with a pre-filled
``--requirements_cache`` (no index), ``--setup_file``, ``--save_main_session``
with dill. Each DoFn imports what only the job shipped. One sidecar (and one
environment cache) serves the whole module, as one pod serves many jobs.

Bad input (a runner stand-in where no real runner misbehaves on purpose):
each is a clear StartWorker error, the worker is recycled, the cache stays
consistent, and a later job is served.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.runners.portability import local_job_service
from apache_beam.testing.util import assert_that, equal_to

from harness_pool.deps.settings import DepsSettings
from harness_pool.flink.local_cluster import free_port
from harness_pool.sidecar.cli import fetch_status, format_table, status_dict
from harness_pool.sidecar.server import Sidecar
from harness_pool.sidecar.settings import SidecarSettings
from tests.deps.helpers import ArtifactServer, build_sdist, file_artifact, make_wheel, wait_for
from tests.sidecar.beam_helpers import run
from tests.sidecar.deps_jobs import (
    JobPackages,
    StandInRunner,
    build_packages,
    write_main_session_job,
)
from tests.sidecar_fixtures import stop_all

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> JobPackages:
    return build_packages(tmp_path_factory.mktemp("job-packages"))


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    """One sidecar with its environment cache, as in one TaskManager pod."""
    cache = tmp_path_factory.mktemp("pod") / "env-cache"
    sidecar = Sidecar(SidecarSettings(
        port=0, workers=2, max_processes=6, drain_timeout=2, stop_grace=2,
        metrics_port=free_port(),
        deps=DepsSettings(cache_dir=str(cache), call_timeout=3.0, prepare_timeout=240.0,
                          pip_timeout=200.0)))
    try:
        sidecar.start()
        assert sidecar.wait_warm(timeout=120), f"pool never got warm: {sidecar.status()}"
        yield sidecar
    finally:
        stop_all([sidecar])


def cache_status(sidecar: Sidecar) -> dict[str, Any]:
    """What ``harness-pool status --json`` prints under env_cache."""
    return status_dict(fetch_status(sidecar.address))["env_cache"]


def metric(sidecar: Sidecar, name: str) -> float:
    text = urllib.request.urlopen(
        f"http://127.0.0.1:{sidecar.metrics_port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _imports(*modules: str) -> Any:
    def value(_: object) -> str:
        import importlib

        return "/".join(importlib.import_module(m).VALUE for m in modules)
    return value


def test_extra_packages_install_once_and_later_stages_use_the_cache(
        pod: Sidecar, packages: JobPackages) -> None:
    """An sdist and a wheel via --extra_package; the job's second stage (another
    environment through a resource hint: another worker) and a second job with the same
    files find the environment: no pip process, and the counters say so."""
    extra = [f"--extra_package={packages.mypkg}", f"--extra_package={packages.tiny1}"]

    def build(p: beam.Pipeline) -> None:
        first = p | beam.Create([0]) | "first stage" >> beam.Map(_imports("mypkg", "tinypkg"))
        second = (first | beam.Reshuffle() | "second stage" >> beam.Map(
            lambda v: v + "|" + __import__("tinypkg").VALUE).with_resource_hints(min_ram="1GB"))
        assert_that(second, equal_to(["mypkg-0.1/tinypkg-1.0|tinypkg-1.0"]))

    before = cache_status(pod)
    run(pod.address, build, "portable", extra)
    after_first = cache_status(pod)
    assert int(after_first["builds"]) - int(before["builds"]) == 1
    pip_runs = int(after_first["pip_runs"]) - int(before["pip_runs"])
    assert pip_runs >= 1
    later = int(after_first["hits"]) + int(after_first["waits"]) - int(before["hits"]) - int(
        before["waits"])
    assert later == 1, f"the job's second stage did not use the cache: {after_first}"
    assert int(after_first["artifacts_reused"]) > int(before["artifacts_reused"]), \
        "the second stage of the job downloaded its artifacts again"

    run(pod.address, build, "portable", extra)  # same content, new job: no pip at all
    after_second = cache_status(pod)
    assert after_second["builds"] == after_first["builds"]
    assert after_second["pip_runs"] == after_first["pip_runs"]
    assert int(after_second["hits"]) + int(after_second["waits"]) == int(
        after_first["hits"]) + int(after_first["waits"]) + 2
    assert int(after_second["bytes_in_use"]) > 0 and int(after_second["environments"]) >= 1
    assert metric(pod, "harness_pool_env_cache_hits_total") == float(after_second["hits"])
    assert metric(pod, "harness_pool_env_cache_pip_runs_total") == float(
        after_second["pip_runs"])
    assert metric(pod, "harness_pool_env_cache_builds_total") == float(after_second["builds"])
    assert metric(pod, "harness_pool_env_cache_bytes") == float(after_second["bytes_in_use"])
    table = format_table(pod.status())  # `harness-pool status` without --json
    assert f"{after_second['hits']} hit" in table and f"{after_second['builds']} built" in table


def test_requirements_file_from_a_prefilled_requirements_cache(
        pod: Sidecar, packages: JobPackages, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = packages.reqpkg.parent
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("reqpkg==2.0\n")
    # The stager runs `pip download` into the cache; with the cache pre-filled and no
    # index it finds the wheel there (no network).
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(cache))
    run(pod.address, lambda p: assert_that(
        p | beam.Create([0]) | beam.Map(_imports("reqpkg")), equal_to(["reqpkg-2.0"])),
        "portable", [f"--requirements_file={requirements}", f"--requirements_cache={cache}"])


def test_setup_file(pod: Sidecar, packages: JobPackages) -> None:
    run(pod.address, lambda p: assert_that(
        p | beam.Create([0]) | beam.Map(_imports("wfpkg")), equal_to(["wfpkg-1.0"])),
        "portable", [f"--setup_file={packages.setup_project / 'setup.py'}"])


def test_save_main_session_with_dill(pod: Sidecar, tmp_path: Path) -> None:
    """A job run as __main__ whose DoFn uses a name imported only there."""
    job = write_main_session_job(tmp_path)
    servicer = local_job_service.LocalJobServicer()
    port = servicer.start_grpc_server(0)
    out = tmp_path / "out.txt"
    try:
        proc = subprocess.run(
            [sys.executable, str(job), str(out), "--runner=PortableRunner",
             f"--job_endpoint=localhost:{port}", "--environment_type=EXTERNAL",
             f"--environment_config={pod.address}", "--save_main_session",
             "--pickle_library=dill"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        servicer.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = sorted(out.read_text().splitlines())
    assert [json.loads(line)["n"] for line in lines] == [1, 2]


def test_two_concurrent_jobs_pinning_two_versions_each_see_their_own(
        pod: Sidecar, packages: JobPackages, tmp_path: Path) -> None:
    """Both stages run at the same time in the same pod (a barrier in the DoFn)."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    errors: list[BaseException] = []

    def job(wheel: Path, want: str) -> None:
        def meet(_: object, folder: str = str(barrier), want: str = want) -> str:
            import os
            import time

            import tinypkg

            open(os.path.join(folder, want), "w").close()
            deadline = time.time() + 120
            while len(os.listdir(folder)) < 2 and time.time() < deadline:
                time.sleep(0.05)
            return f"{tinypkg.VALUE}/{len(os.listdir(folder))}"

        try:
            run(pod.address, lambda p: assert_that(
                p | beam.Create([0]) | beam.Map(meet), equal_to([f"{want}/2"])),
                "portable", [f"--extra_package={wheel}"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(packages.tiny1, "tinypkg-1.0")),
               threading.Thread(target=job, args=(packages.tiny2, "tinypkg-2.0"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert sorted(os.listdir(barrier)) == ["tinypkg-1.0", "tinypkg-2.0"]


# -- bad input ------------------------------------------------------------------


def _recycled_and_consistent(pod: Sidecar, stage: str) -> None:
    """The worker that got ``stage`` is gone and replaced; no half environment is left."""
    record = next(r for r in pod.status().assignments if r.runner_worker_id == stage)
    assert record.outcome == "start_failed", record
    wait_for(lambda: all(w.pool_id != record.pool_id or w.state == "exited"
                         for w in pod.status().workers), 30, "the failed worker to exit")
    assert pod.wait_warm(timeout=60), "no warm worker after the failure"
    root = Path(pod.settings.deps.cache_dir)
    if (root / "envs").is_dir():
        for env in (root / "envs").iterdir():
            assert (env / "harness-pool-env.json").is_file(), f"half environment {env}"
        wait_for(lambda: not list((root / "building").iterdir()), 30, "builds cleaned up")


def _as_extra_package(wheel: Path, folder: Path, declare: bool = False) -> list[Any]:
    """The artifacts ``--extra_package=wheel`` stages: the file and extra_packages.txt."""
    listing = folder / "extra_packages.txt"
    listing.write_text(wheel.name + "\n")
    return [file_artifact(wheel, declare=declare), file_artifact(listing)]


def _later_job_is_served(pod: Sidecar, packages: JobPackages) -> None:
    run(pod.address, lambda p: assert_that(
        p | beam.Create([0]) | beam.Map(_imports("tinypkg")), equal_to(["tinypkg-1.0"])),
        "portable", [f"--extra_package={packages.tiny1}"])


@pytest.mark.parametrize("case", ["silent", "cut", "short", "pip"])
def test_bad_input_is_a_clear_start_worker_error(
        pod: Sidecar, packages: JobPackages, case: str, tmp_path: Path) -> None:
    mode = {"silent": "silent", "cut": "cut", "short": "short", "pip": "beam"}[case]
    # content this pod has never seen (a declared hash it has would be served from its store)
    wheel = packages.needy if case == "pip" else make_wheel(tmp_path, f"fresh_{case}", "1.0")
    failures = int(cache_status(pod)["failures"])
    with ArtifactServer(mode, only=wheel.name) as artifacts:  # extra_packages.txt stays whole
        runner = StandInRunner(_as_extra_package(wheel, tmp_path, declare=case == "short"),
                               artifacts.endpoint)
        try:
            error = runner.start_worker(pod.address, f"bad-{case}")
        finally:
            runner.stop()
    assert error.startswith(f"stage bad-{case}: worker "), error
    expected = {
        "silent": [artifacts.endpoint, "failed resolving", "DEADLINE_EXCEEDED"],
        "cut": [artifacts.endpoint, wheel.name],
        "short": [wheel.name, "sha256"],
        "pip": ["nosuchdep==9.9", "No matching distribution"],
    }[case]
    for text in expected:
        assert text in error, f"{text!r} not in the error: {error}"
    assert int(cache_status(pod)["failures"]) == failures + 1
    _recycled_and_consistent(pod, f"bad-{case}")
    _later_job_is_served(pod, packages)


def test_a_full_cache_disk_is_a_clear_error_and_the_cache_stays_usable(
        packages: JobPackages, tmp_path: Path) -> None:
    """The cache on a real 4 MiB tmpfs; a job whose environment cannot fit there."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (tests/deps/test_envcache.py covers the "
                    "full-disk path through an injected ENOSPC)")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                   check=True, timeout=30)
    sidecar = Sidecar(SidecarSettings(
        port=0, workers=1, drain_timeout=2, stop_grace=2,
        deps=DepsSettings(cache_dir=str(mount / "cache"), cache_size=0)))
    try:
        sidecar.start()
        assert sidecar.wait_warm(timeout=120)
        with ArtifactServer() as artifacts:
            runner = StandInRunner(_as_extra_package(packages.big, tmp_path),
                                   artifacts.endpoint)
            try:
                error = runner.start_worker(sidecar.address, "too-big")
            finally:
                runner.stop()
        assert "full" in error and str(mount / "cache") in error, error
        _recycled_and_consistent(sidecar, "too-big")
        assert not list((mount / "cache" / "envs").iterdir())
        _later_job_is_served(sidecar, packages)
    finally:
        stop_all([sidecar])
        time.sleep(0.2)
        subprocess.run(["umount", str(mount)], check=True, timeout=30)


def test_a_job_interpreter_that_does_not_exist_or_cannot_start_is_a_clear_error(
        pod: Sidecar, packages: JobPackages, tmp_path: Path) -> None:
    broken = tmp_path / "venv" / "bin" / "python"
    broken.parent.mkdir(parents=True)
    broken.write_text("#!/bin/sh\necho 'this python cannot import anything' >&2\nexit 3\n")
    broken.chmod(0o755)
    runner = StandInRunner([], "")
    try:
        missing = runner.start_worker(pod.address, "no-such-python", params={
            "python": "venv/bin/python", "_PYTHON_WORKING_DIR": str(tmp_path / "nowhere")})
        failing = runner.start_worker(pod.address, "broken-python", params={
            "HARNESS_POOL_PYTHON": str(broken), "BOOT_LOG_DIR": str(tmp_path)})
    finally:
        runner.stop()
    assert "StartWorker for worker 'no-such-python'" in missing, missing
    assert "_PYTHON_WORKING_DIR" in missing or "not an executable file" in missing, missing
    assert failing.startswith("stage broken-python: no worker could be started in the job's "
                              f"interpreter {broken}"), failing
    assert "exited with code 3 before it was ready" in failing, failing
    wait_for(lambda: not pod.status().env_cache.interpreters, 30, "the launcher to be dropped")
    _later_job_is_served(pod, packages)  # the pool's own workers never backed off


def test_workers_start_in_a_neutral_directory(pod: Sidecar) -> None:
    """``python -m`` puts the working directory first on sys.path: a worker's is a private
    directory holding only harness_pool, never the sidecar's."""
    def first_path_entry(_: object) -> str:
        import os
        import sys

        return f"{os.path.basename(sys.path[0]).rsplit('-', 1)[0]}:{os.listdir(sys.path[0])}"

    run(pod.address, lambda p: assert_that(
        p | beam.Create([0]) | beam.Map(first_path_entry),
        equal_to(["harness-pool-cwd:['harness_pool']"])), "portable")


def test_a_staged_beam_sdk_of_another_version_is_a_clear_error(
        pod: Sidecar, packages: JobPackages, tmp_path: Path) -> None:
    """--sdk_location with another Beam version: refused at StartWorker, the job fails with
    the sentence, the pool goes on."""
    sdk = build_sdist(tmp_path, "fakebeam", "2.60.0")
    failures = int(cache_status(pod)["failures"])
    with pytest.raises(RuntimeError) as raised:
        run(pod.address, lambda p: p | beam.Create([0]) | beam.Map(str), "portable",
            [f"--sdk_location={sdk}"])
    records = [r for r in pod.status().assignments if r.outcome == "start_failed"
               and "Beam SDK" in r.detail]
    assert records, f"no refused stage: {raised.value}"
    assert ("job staged the Beam SDK dataflow_python_sdk.tar (2.60.0, --sdk_location) but "
            "this worker runs apache-beam 2.61.0") in records[0].detail
    assert int(cache_status(pod)["failures"]) == failures + 1
    _later_job_is_served(pod, packages)


def test_a_job_needing_another_protobuf_is_a_clear_error(
        pod: Sidecar, packages: JobPackages, tmp_path: Path) -> None:
    """An --extra_package wheel 'protobuf 4.25.3': the worker imported its own protobuf."""
    fake = make_wheel(tmp_path, "protobuf", "4.25.3")
    with pytest.raises(RuntimeError):
        run(pod.address, lambda p: p | beam.Create([0]) | beam.Map(str), "portable",
            [f"--extra_package={fake}"])
    records = [r for r in pod.status().assignments if r.outcome == "start_failed"
               and "protobuf 4.25.3" in r.detail]
    assert records, [r.detail for r in pod.status().assignments]
    assert "but this worker's fork server already imported protobuf" in records[0].detail
    _recycled_and_consistent(pod, records[0].runner_worker_id)
    _later_job_is_served(pod, packages)
