"""prepare(): a job's artifacts from a real artifact service to an activated environment."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from apache_beam.portability.api import beam_runner_api_pb2 as rapi

from harness_pool.deps import EnvCache, Outcome, WorkerFacts, prepare
from harness_pool.deps import manifest as mf
from harness_pool.deps.errors import BadArtifactError, DependencyConflict
from harness_pool.deps.plan import NO_ENVIRONMENT
from harness_pool.deps.prepare import PreparedEnvironment, sdk_version
from tests.deps.conftest import Packages
from tests.deps.helpers import ArtifactServer, file_artifact

REPO = Path(__file__).resolve().parents[2]


class Job:
    """A job's files where a runner keeps them (``runner/<job>/``), and its manifest."""

    def __init__(self, root: Path, name: str) -> None:
        self.dir = root / "runner" / name
        self.dir.mkdir(parents=True)
        self.deps: list[rapi.ArtifactInformation] = []

    def add(self, staged_name: str, content: bytes | Path) -> Job:
        path = self.dir / f"{len(self.deps)}-{staged_name}"
        if isinstance(content, Path):
            shutil.copy(content, path)
        else:
            path.write_bytes(content)
        self.deps.append(file_artifact(path, staged_name))
        return self


def run_prepare(job: Job, server: ArtifactServer, cache: EnvCache, semi: Path,
                facts: WorkerFacts, worker_id: str = "1-1") -> PreparedEnvironment:
    return prepare(job.deps, artifact_endpoint=server.endpoint, runner_worker_id=worker_id,
                   semi_dir=semi, cache=cache, deadline=time.monotonic() + 300, facts=facts)


def probe(prepared: PreparedEnvironment, code: str) -> dict:
    script = (
        "import json\nfrom pathlib import Path\n"
        "from harness_pool.deps.prepare import PreparedEnvironment, PrepareStats\n"
        f"PreparedEnvironment(Path('.'), None, 'k', {prepared.sys_path_entries!r}, "
        "PrepareStats()).activate()\n" + code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def beam_job(tmp_path: Path, packages: Packages, name: str = "job-1") -> Job:
    """What Beam's stager sends for --requirements_file (+ cache), --extra_package,
    --save_main_session: the same names, roles and layout."""
    return (Job(tmp_path, name)
            .add(mf.REQUIREMENTS, b"reqpkg==2.0\n")
            .add(packages.reqpkg.name, packages.reqpkg)
            .add(packages.mypkg.name, packages.mypkg)
            .add(mf.EXTRA_PACKAGES, f"{packages.mypkg.name}\n".encode())
            .add(mf.MAIN_SESSION, b"\x80\x04main session")
            .add(mf.SUBMISSION_ENVIRONMENT, b"apache-beam==2.61.0\n"))


@pytest.mark.slow
def test_first_stage_builds_later_stages_reuse_without_rpc_or_pip(
        tmp_path: Path, packages: Packages, cache: EnvCache,
        facts: WorkerFacts) -> None:
    job = beam_job(tmp_path, packages)
    with ArtifactServer() as server:
        began = time.monotonic()
        first = run_prepare(job, server, cache, tmp_path / "semi-1", facts)
        cold = time.monotonic() - began
        calls = len(server.calls)
        began = time.monotonic()
        second = run_prepare(job, server, cache, tmp_path / "semi-2", facts, worker_id="2-1")
        warm = time.monotonic() - began
        assert len(server.calls) == calls  # no ResolveArtifacts, no GetArtifact
    print(f"\nprepare: cold {cold * 1000:.0f} ms ({first.stats.pip_runs} pip runs), "
          f"warm {warm * 1000:.1f} ms")
    assert first.stats.outcome == str(Outcome.BUILT) and first.stats.pip_runs == 2
    assert second.stats.outcome == str(Outcome.HIT) and second.stats.pip_runs == 0
    assert (second.stats.staging.reused, second.stats.staging.rpcs) == (6, 0)
    assert first.env_key == second.env_key != NO_ENVIRONMENT
    assert second.main_session == tmp_path / "semi-2" / "staged" / mf.MAIN_SESSION
    assert second.main_session.read_bytes() == b"\x80\x04main session"
    seen = probe(second, "import mypkg, reqpkg, six\n"
                         "print(json.dumps([mypkg.VALUE, reqpkg.VALUE, six.__file__]))")
    assert seen[:2] == ["mypkg-0.1", "reqpkg-2.0"]
    assert second.sys_path_entries[0] not in seen[2]  # six: the worker's, not reinstalled
    first.close()
    second.close()


def tiny_job(tmp_path: Path, wheel: Path, version: str, name: str) -> Job:
    """--requirements_file pinning tinypkg, with the wheel from --requirements_cache."""
    return (Job(tmp_path, name).add(wheel.name, wheel)
            .add(mf.REQUIREMENTS, f"tinypkg=={version}\n".encode()))


@pytest.mark.slow
def test_two_jobs_pinning_different_versions_coexist(
        tmp_path: Path, packages: Packages, cache: EnvCache,
        facts: WorkerFacts) -> None:
    jobs = {"1.0": tiny_job(tmp_path, packages.tiny1, "1.0", "job-a"),
            "2.0": tiny_job(tmp_path, packages.tiny2, "2.0", "job-b")}
    prepared: dict[str, PreparedEnvironment] = {}
    errors: list[BaseException] = []
    with ArtifactServer() as server:
        def run(version: str) -> None:
            try:
                prepared[version] = run_prepare(jobs[version], server, cache,
                                                tmp_path / f"semi-{version}", facts)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(v,)) for v in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    assert not errors, errors
    assert prepared["1.0"].env_key != prepared["2.0"].env_key
    for version, env in prepared.items():
        assert probe(env, "import tinypkg; print(json.dumps(tinypkg.VALUE))") == \
            f"tinypkg-{version}"
        env.close()
    assert cache.usage().environments == 2


@pytest.mark.slow
def test_a_job_needing_another_protobuf_is_refused_before_any_stage_runs(
        tmp_path: Path, packages: Packages, cache: EnvCache,
        facts: WorkerFacts) -> None:
    job = (Job(tmp_path, "job-pb").add(mf.REQUIREMENTS, b"protobuf==4.25.3\n")
           .add(packages.fake_protobuf.name, packages.fake_protobuf))
    worker_protobuf = facts.distributions["protobuf"]
    with ArtifactServer() as server:
        for attempt in (1, 2):  # the second time from the cache, without pip
            with pytest.raises(DependencyConflict) as err:
                run_prepare(job, server, cache, tmp_path / f"semi-{attempt}", facts)
            assert (err.value.package, err.value.job_version, err.value.worker_version) == (
                "protobuf", "4.25.3", worker_protobuf)
            assert str(err.value).startswith(
                f"job needs protobuf 4.25.3 but this worker's fork server already imported "
                f"protobuf {worker_protobuf}")
    assert cache.counters.builds == 1 and cache.counters.hits == 1
    assert cache.evict(target=0) >= 1  # the refused job holds no lease on its environment


def sdk_tarball(version: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = f"Metadata-Version: 2.1\nName: apache-beam\nVersion: {version}\n".encode()
        info = tarfile.TarInfo(f"apache-beam-{version}/PKG-INFO")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_staged_sdk_of_the_workers_version_is_not_installed(
        tmp_path: Path, cache: EnvCache, facts: WorkerFacts) -> None:
    job = Job(tmp_path, "job-sdk").add(mf.SDK_SOURCES, sdk_tarball(facts.runtime.beam_version))
    with ArtifactServer() as server:
        prepared = run_prepare(job, server, cache, tmp_path / "semi", facts)
    assert prepared.env_key == NO_ENVIRONMENT and prepared.sys_path_entries == ()
    assert cache.usage().environments == 0


def test_a_staged_sdk_of_another_version_is_refused(tmp_path: Path, cache: EnvCache,
                                                    facts: WorkerFacts) -> None:
    job = Job(tmp_path, "job-sdk").add(mf.SDK_SOURCES, sdk_tarball("2.60.0"))
    with ArtifactServer() as server, pytest.raises(DependencyConflict) as err:
        run_prepare(job, server, cache, tmp_path / "semi", facts)
    assert err.value.job_version == "2.60.0"
    assert f"this worker runs apache-beam {facts.runtime.beam_version}" in str(err.value)


@pytest.mark.parametrize("name, expected", [
    ("apache_beam-2.61.0-cp311-cp311-manylinux_2_17_x86_64.whl", "2.61.0"),
    ("dataflow_python_sdk.tar", "2.59.0"),
], ids=["wheel-name", "sdist-pkg-info"])
def test_sdk_version(tmp_path: Path, name: str, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(sdk_tarball("2.59.0") if name.endswith(".tar") else b"not read")
    assert sdk_version(path) == expected


def test_a_job_without_dependencies_touches_nothing(tmp_path: Path, cache: EnvCache,
                                                    facts: WorkerFacts) -> None:
    prepared = prepare([], artifact_endpoint="", runner_worker_id="1-1", semi_dir=tmp_path,
                       cache=cache, deadline=time.monotonic() + 5, facts=facts)
    assert prepared.env_key == NO_ENVIRONMENT and prepared.main_session is None
    assert not (tmp_path / "staged").exists()
    assert cache.usage().blobs == 0


def test_only_a_main_session_needs_no_environment(tmp_path: Path, cache: EnvCache,
                                                  facts: WorkerFacts) -> None:
    job = Job(tmp_path, "job-ms").add(mf.MAIN_SESSION, b"session")
    with ArtifactServer() as server:
        prepared = run_prepare(job, server, cache, tmp_path / "semi", facts)
    assert prepared.env_key == NO_ENVIRONMENT
    assert prepared.main_session is not None and prepared.main_session.read_bytes() == b"session"
    assert prepared.stats.pip_runs == 0 and cache.usage().environments == 0


def test_dependencies_without_an_artifact_endpoint_are_refused(tmp_path: Path, cache: EnvCache,
                                                               facts: WorkerFacts) -> None:
    job = Job(tmp_path, "job-x").add(mf.MAIN_SESSION, b"s")
    with pytest.raises(BadArtifactError, match="stage 7-1: the job staged 1 artifact.* no "
                                               "artifact endpoint"):
        prepare(job.deps, artifact_endpoint="", runner_worker_id="7-1", semi_dir=tmp_path,
                cache=cache, deadline=time.monotonic() + 5, facts=facts)


def test_an_extra_package_that_was_not_staged_is_refused_without_pip(
        tmp_path: Path, cache: EnvCache, facts: WorkerFacts) -> None:
    job = Job(tmp_path, "job-x").add(mf.EXTRA_PACKAGES, b"ghost-1.0.tar.gz\n")
    with ArtifactServer() as server, pytest.raises(BadArtifactError, match="ghost-1.0.tar.gz"):
        run_prepare(job, server, cache, tmp_path / "semi", facts)
    assert cache.usage().environments == 0 and cache.counters.build_failures == 1


def test_activate_puts_the_environment_first_and_skips_the_link_to_the_worker(
        tmp_path: Path) -> None:
    from harness_pool.deps.installer import BASE_PTH

    site_dir = tmp_path / "env" / "site-packages"
    (site_dir / "shadow").mkdir(parents=True)
    (site_dir / "shadow" / "__init__.py").write_text("WHERE = 'job'\n")
    extra = tmp_path / "extra-dir"
    extra.mkdir()
    (extra / "viapth.py").write_text("WHERE = 'pth'\n")
    (site_dir / "extra.pth").write_text(f"{extra}\n")
    (site_dir / BASE_PTH).write_text("import sys; sys.base_pth_ran = True\n")
    worker_copy = tmp_path / "worker-site"
    (worker_copy / "shadow").mkdir(parents=True)
    (worker_copy / "shadow" / "__init__.py").write_text("WHERE = 'worker'\n")
    code = (
        "import json, sys\nfrom pathlib import Path\n"
        f"sys.path.insert(0, {str(worker_copy)!r})\n"
        "from harness_pool.deps.prepare import PreparedEnvironment, PrepareStats\n"
        f"PreparedEnvironment(Path('.'), None, 'k', ({str(site_dir)!r},), PrepareStats())"
        ".activate()\n"
        "import shadow, viapth\n"
        "print(json.dumps([sys.path[:2], shadow.WHERE, viapth.WHERE,"
        " getattr(sys, 'base_pth_ran', False)]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    path, shadow, via_pth, base_ran = json.loads(out.stdout.strip().splitlines()[-1])
    assert path == [str(site_dir), str(extra)]
    assert (shadow, via_pth, base_ran) == ("job", "pth", False)
