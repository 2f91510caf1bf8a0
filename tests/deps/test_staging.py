"""Staging a job's artifacts from a real ArtifactRetrievalService on port 0."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from apache_beam.portability.api import beam_runner_api_pb2 as rapi

from harness_pool.deps import manifest as mf
from harness_pool.deps.artifacts import ArtifactClient
from harness_pool.deps.blobs import BlobStore
from harness_pool.deps.errors import (
    ArtifactIntegrityError,
    ArtifactUnavailableError,
    BadArtifactError,
)
from harness_pool.deps.manifest import parse_dependencies
from harness_pool.deps.staging import StagingStats, stage_artifacts
from tests.deps.helpers import ArtifactServer, file_artifact, sha256


@pytest.fixture
def job(tmp_path: Path) -> list[rapi.ArtifactInformation]:
    """A job as the runner lists it: a package, a requirements file, a main session."""
    files = tmp_path / "runner" / "job-1"
    files.mkdir(parents=True)
    (files / "x-mypkg-0.1.tar.gz").write_bytes(b"sdist bytes " * 20000)  # several chunks
    (files / "y-requirements.txt").write_text("mypkg==0.1\n")
    (files / "z-pickled_main_session").write_bytes(b"\x80\x04session")
    return [file_artifact(files / "x-mypkg-0.1.tar.gz", "mypkg-0.1.tar.gz"),
            file_artifact(files / "y-requirements.txt", mf.REQUIREMENTS),
            file_artifact(files / "z-pickled_main_session", mf.MAIN_SESSION)]


def stage(deps: list[rapi.ArtifactInformation], endpoint: str, semi: Path, blobs: BlobStore,
          timeout: float = 30.0, worker_id: str = "1-1") -> tuple[list, StagingStats]:
    stats = StagingStats()
    files = stage_artifacts(parse_dependencies(deps), semi / "staged", blobs,
                            lambda: ArtifactClient(endpoint, worker_id),
                            time.monotonic() + timeout, stats)
    return files, stats


def payload_path(dep: rapi.ArtifactInformation) -> Path:
    return Path(rapi.ArtifactFilePayload.FromString(dep.type_payload).path)


def test_stages_every_artifact_under_its_name_sending_the_runners_worker_id(
        tmp_path: Path, job: list[rapi.ArtifactInformation]) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    with ArtifactServer() as server:
        files, stats = stage(job, server.endpoint, tmp_path / "semi", blobs, worker_id="3-1")
        calls = list(server.calls)
    assert [m for m, _ in calls] == ["ResolveArtifacts"] + ["GetArtifact"] * 3
    assert {w for _, w in calls} == {"3-1"}
    staged = tmp_path / "semi" / "staged"
    for dep, name in zip(job, ["mypkg-0.1.tar.gz", mf.REQUIREMENTS, mf.MAIN_SESSION], strict=True):
        assert (staged / name).read_bytes() == payload_path(dep).read_bytes()
    assert {f.name: f.sha256 for f in files} == {
        name: sha256(payload_path(dep))
        for dep, name in zip(job, ["mypkg-0.1.tar.gz", mf.REQUIREMENTS, mf.MAIN_SESSION],
                             strict=True)}
    assert (stats.fetched, stats.reused, stats.rpcs) == (3, 0, 4)
    assert stats.bytes_fetched == sum(payload_path(d).stat().st_size for d in job)
    assert sorted(p.name for p in staged.iterdir()) == sorted(
        ["mypkg-0.1.tar.gz", mf.REQUIREMENTS, mf.MAIN_SESSION])  # no temp files left


def test_later_stages_of_a_job_make_no_rpc_at_all(
        tmp_path: Path, job: list[rapi.ArtifactInformation]) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    with ArtifactServer() as server:
        stage(job, server.endpoint, tmp_path / "semi1", blobs)
        before = len(server.calls)
        files, stats = stage(job, server.endpoint, tmp_path / "semi2", blobs)
        assert len(server.calls) == before
    assert (stats.fetched, stats.reused, stats.rpcs) == (0, 3, 0)
    assert (tmp_path / "semi2" / "staged" / mf.MAIN_SESSION).read_bytes() == b"\x80\x04session"


def test_a_new_job_with_declared_hashes_reuses_known_content_without_rpc(
        tmp_path: Path, job: list[rapi.ArtifactInformation]) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    declared = [file_artifact(payload_path(d), mf.parse_dependencies([d])[0].name, declare=True)
                for d in job]
    with ArtifactServer() as server:
        stage(job, server.endpoint, tmp_path / "semi1", blobs)
        before = len(server.calls)
        _, stats = stage(declared, server.endpoint, tmp_path / "semi2", blobs)
        assert len(server.calls) == before
    assert stats.reused == 3


def test_a_new_job_without_declared_hashes_downloads_again(
        tmp_path: Path, job: list[rapi.ArtifactInformation]) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    other_job = tmp_path / "runner" / "job-2"
    other_job.mkdir()
    copies = []
    for dep in job:
        copy = other_job / payload_path(dep).name
        copy.write_bytes(payload_path(dep).read_bytes())
        copies.append(file_artifact(copy, mf.parse_dependencies([dep])[0].name))
    with ArtifactServer() as server:
        stage(job, server.endpoint, tmp_path / "semi1", blobs)
        files, stats = stage(copies, server.endpoint, tmp_path / "semi2", blobs)
    assert stats.fetched == 3
    assert len(blobs.entries()) == 3  # same content: the store holds it once


def test_a_wrong_declared_hash_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "pkg.tar.gz"
    source.write_bytes(b"real bytes")
    dep = file_artifact(source, declared="0" * 64)
    blobs = BlobStore(tmp_path / "blobs")
    with ArtifactServer() as server, pytest.raises(ArtifactIntegrityError) as err:
        stage([dep], server.endpoint, tmp_path / "semi", blobs)
    text = str(err.value)
    assert "artifact #0 'pkg.tar.gz'" in text and server.endpoint in text
    assert f"sha256 {sha256(source)}" in text and "declares " + "0" * 64 in text
    assert not (tmp_path / "semi" / "staged" / "pkg.tar.gz").exists()
    assert blobs.entries() == [] and list((tmp_path / "blobs" / ".partial").iterdir()) == []


def test_a_silent_endpoint_fails_within_the_deadline_naming_it(tmp_path: Path,
                                                               job: list) -> None:
    with ArtifactServer("silent") as server:
        began = time.monotonic()
        with pytest.raises(ArtifactUnavailableError) as err:
            stage(job, server.endpoint, tmp_path / "semi", BlobStore(tmp_path / "b"),
                  timeout=1.5, worker_id="2-1")
        elapsed = time.monotonic() - began
    assert elapsed < 15, elapsed  # bounded by the deadline, not by the server
    text = str(err.value)
    assert server.endpoint in text and "worker 2-1" in text and "DEADLINE_EXCEEDED" in text


def test_an_unreachable_endpoint_is_reported(tmp_path: Path, job: list) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        with pytest.raises(ArtifactUnavailableError) as err:
            stage(job, endpoint, tmp_path / "semi", BlobStore(tmp_path / "b"), timeout=10)
    assert endpoint in str(err.value) and "UNAVAILABLE" in str(err.value)


def test_a_stream_cut_by_the_server_is_reported_truncated(tmp_path: Path, job: list) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    with ArtifactServer("cut") as server, pytest.raises(ArtifactUnavailableError) as err:
        stage(job, server.endpoint, tmp_path / "semi", blobs)
    text = str(err.value)
    assert "artifact #0 'mypkg-0.1.tar.gz'" in text
    assert "stream cut after 120000 bytes: truncated" in text and "UNAVAILABLE" in text
    assert blobs.entries() == [] and list((tmp_path / "blobs" / ".partial").iterdir()) == []
    assert not (tmp_path / "semi" / "staged" / "mypkg-0.1.tar.gz").exists()


def test_a_short_stream_is_caught_by_the_declared_hash(tmp_path: Path, job: list) -> None:
    declared = [file_artifact(payload_path(d), mf.parse_dependencies([d])[0].name, declare=True)
                for d in job]
    with ArtifactServer("short") as server, pytest.raises(ArtifactIntegrityError,
                                                          match="truncated or corrupt"):
        stage(declared, server.endpoint, tmp_path / "semi", BlobStore(tmp_path / "b"))


def test_an_evicted_blob_is_fetched_again(tmp_path: Path, job: list) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    with ArtifactServer() as server:
        files, _ = stage(job, server.endpoint, tmp_path / "semi1", blobs)
        session = next(f for f in files if f.name == mf.MAIN_SESSION)
        blobs.path(session.sha256).unlink()
        _, stats = stage(job, server.endpoint, tmp_path / "semi2", blobs)
        assert server.methods()[-2:] == ["ResolveArtifacts", "GetArtifact"]
    assert (stats.reused, stats.fetched) == (2, 1)
    assert (tmp_path / "semi2" / "staged" / mf.MAIN_SESSION).read_bytes() == b"\x80\x04session"


def test_embedded_artifacts_need_no_endpoint(tmp_path: Path) -> None:
    dep = rapi.ArtifactInformation(
        type_urn=mf.EMBEDDED_TYPE,
        type_payload=rapi.EmbeddedFilePayload(data=b"inline").SerializeToString(),
        role_urn=mf.STAGING_TO_ROLE,
        role_payload=rapi.ArtifactStagingToRolePayload(staged_name="inline.txt")
        .SerializeToString())
    _, stats = stage([dep], "127.0.0.1:1", tmp_path / "semi", BlobStore(tmp_path / "b"))
    assert (tmp_path / "semi" / "staged" / "inline.txt").read_bytes() == b"inline"
    assert stats.rpcs == 0


def test_two_artifacts_with_one_name_and_different_content_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"one")
    (tmp_path / "b").write_bytes(b"two")
    deps = [file_artifact(tmp_path / "a", "same.whl"), file_artifact(tmp_path / "b", "same.whl")]
    with ArtifactServer() as server, pytest.raises(BadArtifactError, match="'same.whl'"):
        stage(deps, server.endpoint, tmp_path / "semi", BlobStore(tmp_path / "blobs"))


def test_a_failing_submission_listing_is_skipped_as_beams_boot_does(tmp_path: Path,
                                                                   job: list) -> None:
    listing = tmp_path / "runner" / "job-1" / "w-submission_environment_dependencies.txt"
    listing.write_text("apache-beam==2.61.0\n")
    deps = job + [file_artifact(listing, mf.SUBMISSION_ENVIRONMENT)]
    with ArtifactServer("cut", only=mf.SUBMISSION_ENVIRONMENT) as server:
        files, stats = stage(deps, server.endpoint, tmp_path / "semi", BlobStore(tmp_path / "b"))
    assert sorted(f.name for f in files) == sorted(["mypkg-0.1.tar.gz", mf.REQUIREMENTS,
                                                    mf.MAIN_SESSION])
    assert stats.fetched == 3
    assert not (tmp_path / "semi" / "staged" / mf.SUBMISSION_ENVIRONMENT).exists()
