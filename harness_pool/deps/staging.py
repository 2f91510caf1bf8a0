"""Puts a job's artifacts into ``<semi-persistent dir>/staged/``, downloading only what is new.

For each artifact of the manifest, its content hash is the one the manifest
declares, or the one the blob store remembers for its identity. When that
blob is present it is linked into ``staged/<name>``: no RPC. Everything else is
resolved with one ``ResolveArtifacts`` call and fetched with ``GetArtifact``
into the blob store (hashed on the way, checked against a declared hash,
renamed into place), then linked. A warm pod therefore serves every stage of
a job after its first without talking to the artifact service at all.

Errors: ``ArtifactUnavailableError`` (endpoint silent, refusing, stream cut),
``ArtifactIntegrityError`` (bytes do not match the declared sha256),
``BadArtifactError`` (the runner resolved to a different number of
artifacts; two artifacts staged under one name with different content),
``CacheFullError``. Nothing half-written is ever visible under ``staged/``
or in the blob store.

Threads: none of its own; the caller's thread does the RPCs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from harness_pool.deps import manifest as mf
from harness_pool.deps.artifacts import ArtifactClient
from harness_pool.deps.blobs import BlobStore, io_error
from harness_pool.deps.errors import (
    ArtifactIntegrityError,
    ArtifactUnavailableError,
    BadArtifactError,
)
from harness_pool.deps.manifest import Artifact, parse_dependencies
from harness_pool.deps.plan import StagedFile

ClientFactory = Callable[[], ArtifactClient]

_LOG = logging.getLogger("harness_pool.deps.staging")


@dataclasses.dataclass
class StagingStats:
    artifacts: int = 0
    reused: int = 0  # linked from the blob store, no RPC
    fetched: int = 0
    bytes_fetched: int = 0
    rpcs: int = 0
    seconds: float = 0.0


def stage_artifacts(
    artifacts: Sequence[Artifact],
    staged_dir: Path,
    blobs: BlobStore,
    client_factory: ClientFactory,
    deadline: float,
    stats: StagingStats,
) -> list[StagedFile]:
    began = time.monotonic()
    stats.artifacts += len(artifacts)
    known: dict[int, str] = {}
    for artifact in artifacts:
        sha = artifact.declared_sha256 or blobs.recall(artifact.identity)
        if artifact.embedded is not None and not blobs.has(artifact.declared_sha256):
            blobs.put_bytes(artifact.embedded, artifact.declared_sha256)
        if sha and blobs.has(sha):
            known[artifact.index] = sha
    try:
        _link_all(artifacts, known, staged_dir, blobs, stats)
        missing = [a for a in artifacts if a.index not in known]
        if missing:
            with client_factory() as client:
                try:
                    _fetch(missing, client, blobs, deadline, known, stats)
                finally:
                    stats.rpcs += client.calls
            _link_all(missing, known, staged_dir, blobs, stats, fetched=True)
    finally:
        stats.seconds += time.monotonic() - began
    return _staged_files(artifacts, known)


def _link_all(artifacts: Sequence[Artifact], known: dict[int, str], staged_dir: Path,
              blobs: BlobStore, stats: StagingStats, fetched: bool = False) -> None:
    for artifact in artifacts:
        sha = known.get(artifact.index)
        if sha is None:
            continue
        try:
            blobs.link_into(sha, staged_dir / artifact.name)
        except FileNotFoundError:
            if fetched:  # evicted between our download and this link: very unlikely
                raise io_error(f"staging {artifact.describe()}",
                               FileNotFoundError(f"blob {sha} vanished")) from None
            del known[artifact.index]  # evicted since we looked: fetch it below
            continue
        if not fetched:
            stats.reused += 1


def _fetch(missing: Sequence[Artifact], client: ArtifactClient, blobs: BlobStore,
           deadline: float, known: dict[int, str], stats: StagingStats) -> None:
    replacements = client.resolve(missing, deadline)
    if len(replacements) != len(missing):
        raise BadArtifactError(
            f"artifact service at {client.endpoint} resolved {len(missing)} artifact(s) into "
            f"{len(replacements)}; this worker needs one replacement per artifact")
    resolved = parse_dependencies(replacements)
    for artifact, replacement, parsed in zip(missing, replacements, resolved, strict=True):
        try:
            _fetch_one(artifact, replacement, parsed, client, blobs, deadline, known, stats)
        except ArtifactUnavailableError as exc:
            if artifact.name != mf.SUBMISSION_ENVIRONMENT:
                raise
            # informational only; Beam's boot ignores this one failure too
            _LOG.warning("skipping %s: %s", artifact.describe(), exc)


def _fetch_one(artifact: Artifact, replacement: object, parsed: Artifact,
               client: ArtifactClient, blobs: BlobStore, deadline: float,
               known: dict[int, str], stats: StagingStats) -> None:
    declared = artifact.declared_sha256 or parsed.declared_sha256
    with blobs.partial() as (path, handle):
        try:
            sha, size = client.fetch(artifact, replacement, handle, deadline)
        except OSError as exc:
            raise io_error(f"writing {artifact.describe()}", exc) from exc
        if declared and sha != declared:
            raise ArtifactIntegrityError(
                f"{artifact.describe()} from {client.endpoint}: received {size} bytes with "
                f"sha256 {sha}, the manifest declares {declared} (truncated or corrupt)")
        blobs.commit(path, handle, sha)
    blobs.remember(artifact.identity, sha)
    known[artifact.index] = sha
    stats.fetched += 1
    stats.bytes_fetched += size


def _staged_files(artifacts: Sequence[Artifact], known: dict[int, str]) -> list[StagedFile]:
    by_name: dict[str, StagedFile] = {}
    for artifact in artifacts:
        if artifact.index not in known:
            continue  # skipped (see _fetch)
        staged = StagedFile(artifact.name, known[artifact.index], artifact.role)
        other = by_name.get(artifact.name)
        if other is not None and other.sha256 != staged.sha256:
            raise BadArtifactError(f"two artifacts are staged as {artifact.name!r} with "
                                   "different content; Beam's boot would keep either one")
        by_name[artifact.name] = staged
    return list(by_name.values())
