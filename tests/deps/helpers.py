"""Test helpers for job dependencies: packages built here, and artifact servers on port 0.

Packages are real sdists and wheels built with the venv's setuptools (offline);
``ArtifactServer`` is Beam's own ``ArtifactRetrievalService`` serving files
from disk on a free port, recording the ``worker_id`` header of every call;
``BadArtifactServer`` misbehaves on purpose (never answers, cuts streams).
"""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import zipfile
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from apache_beam.portability.api import (
    beam_artifact_api_pb2,
    beam_artifact_api_pb2_grpc,
    beam_runner_api_pb2,
)
from apache_beam.runners.portability import artifact_service

from harness_pool.deps import manifest as mf

PIP_ENV_DROP = "PIP_"


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(PIP_ENV_DROP)}


def write_project(root: Path, name: str, version: str, requires: tuple[str, ...] = (),
                  module: str = "", setup_extra: str = "") -> Path:
    """A setuptools project whose module ``name`` has VALUE = "<name>-<version>"."""
    project = root / f"src-{name}-{version}"
    package = project / name
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(
        module or f'VALUE = "{name}-{version}"\n')
    (project / "setup.py").write_text(textwrap.dedent(f"""\
        from setuptools import setup
        {setup_extra}
        setup(name={name!r}, version={version!r}, packages=[{name!r}],
              install_requires={list(requires)!r})
        """))
    return project


def build_sdist(root: Path, name: str, version: str, requires: tuple[str, ...] = (),
                module: str = "", setup_extra: str = "", out: Path | None = None) -> Path:
    project = write_project(root, name, version, requires, module, setup_extra)
    out = out or root / "dist"
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(out)], cwd=project,
                   check=True, capture_output=True, env=_clean_env(), timeout=120)
    return out / f"{name}-{version}.tar.gz"


def make_wheel(out: Path, name: str, version: str, requires: tuple[str, ...] = (),
               module: str = "", files: dict[str, bytes] | None = None) -> Path:
    """A pure-Python wheel (PEP 427) written directly: module ``name`` with VALUE set."""
    dist = f"{name.replace('-', '_')}-{version}"
    info = f"{dist}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    entries = {
        f"{name}/__init__.py": (module or f'VALUE = "{name}-{version}"\n').encode(),
        **{f"{name}/{k}": v for k, v in (files or {}).items()},
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: harness-pool-tests\n"
                         b"Root-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/top_level.txt": f"{name}\n".encode(),
    }
    record = "".join(f"{path},sha256={_b64_digest(data)},{len(data)}\n"
                     for path, data in entries.items()) + f"{info}/RECORD,,\n"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry, data in entries.items():
            archive.writestr(entry, data)
        archive.writestr(f"{info}/RECORD", record)
    return path


def make_sdist(out: Path, name: str, version: str, setup_py: str) -> Path:
    """An sdist written directly: ``name-version/setup.py`` (given) and a package ``name``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{version}.tar.gz"
    members = {f"{name}-{version}/setup.py": setup_py.encode(),
               f"{name}-{version}/{name}/__init__.py": f'VALUE = "{name}-{version}"\n'.encode()}
    with tarfile.open(path, "w:gz") as archive:
        for member, data in members.items():
            entry = tarfile.TarInfo(member)
            entry.size = len(data)
            archive.addfile(entry, io.BytesIO(data))
    return path


def _b64_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_artifact(path: Path, staged_name: str | None = None, declare: bool = False,
                  declared: str = "", role: str = mf.STAGING_TO_ROLE
                  ) -> beam_runner_api_pb2.ArtifactInformation:
    """A FILE artifact as a job server lists it (``declare``: with its content hash)."""
    digest = declared or (sha256(path) if declare else "")
    info = beam_runner_api_pb2.ArtifactInformation(
        type_urn=mf.FILE_TYPE,
        type_payload=beam_runner_api_pb2.ArtifactFilePayload(
            path=str(path), sha256=digest).SerializeToString(),
        role_urn=role)
    if role == mf.STAGING_TO_ROLE:
        info.role_payload = beam_runner_api_pb2.ArtifactStagingToRolePayload(
            staged_name=staged_name or path.name).SerializeToString()
    return info


class _Recording(artifact_service.ArtifactRetrievalService):
    """Beam's own retrieval service, recording each call's worker_id header."""

    def __init__(self, server: ArtifactServer) -> None:
        super().__init__(file_reader=lambda path: open(path, "rb"), chunk_size=64 << 10)
        self._server = server

    def _record(self, method: str, context: Any) -> None:
        headers = dict(context.invocation_metadata())
        with self._server.lock:
            self._server.calls.append((method, headers.get("worker_id", "")))

    def ResolveArtifacts(self, request, context=None):
        self._record("ResolveArtifacts", context)
        return super().ResolveArtifacts(request, context)

    def GetArtifact(self, request, context=None):
        self._record("GetArtifact", context)
        yield from super().GetArtifact(request, context)


class _Misbehaving(beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceServicer):
    """``silent``: never answers; ``cut``: sends some bytes, then fails the stream;
    ``short``: sends the first half and ends the stream as if complete. With ``only``,
    files whose path does not end with it are served whole."""

    def __init__(self, server: ArtifactServer, mode: str, only: str = "") -> None:
        self._server = server
        self._mode = mode
        self._only = only

    def ResolveArtifacts(self, request, context):
        if self._mode == "silent":
            self._server.release.wait(60)
        return beam_artifact_api_pb2.ResolveArtifactsResponse(replacements=request.artifacts)

    def GetArtifact(self, request, context):
        payload = beam_runner_api_pb2.ArtifactFilePayload.FromString(
            request.artifact.type_payload)
        data = Path(payload.path).read_bytes()
        if self._only and not payload.path.endswith(self._only):
            yield beam_artifact_api_pb2.GetArtifactResponse(data=data)
            return
        half = data[: max(1, len(data) // 2)]
        yield beam_artifact_api_pb2.GetArtifactResponse(data=half)
        if self._mode == "cut":
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset by the test")


class ArtifactServer:
    """A real gRPC ArtifactRetrievalService on 127.0.0.1:<free port>."""

    def __init__(self, mode: str = "beam", only: str = "") -> None:
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        servicer: Any = _Recording(self) if mode == "beam" else _Misbehaving(self, mode, only)
        beam_artifact_api_pb2_grpc.add_ArtifactRetrievalServiceServicer_to_server(
            servicer, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"127.0.0.1:{self.port}"
        self._server.start()

    def methods(self) -> list[str]:
        with self.lock:
            return [m for m, _ in self.calls]

    def stop(self) -> None:
        self.release.set()
        self._server.stop(grace=None).wait(10)

    def __enter__(self) -> ArtifactServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} not met within {timeout}s")
