"""Client of the runner's ``ArtifactRetrievalService`` (Beam Fn API, job management v1).

A thin shell: ``ResolveArtifacts`` and ``GetArtifact`` with the runner's
``worker_id`` header on every call (runners may serve artifacts per
environment and route by it), a deadline on every call, and every
``grpc.RpcError`` translated into ``ArtifactUnavailableError`` whose message
names the endpoint, the worker id and the artifact.

``fetch`` streams the chunks into a caller-supplied binary file while hashing
them; it returns (sha256, size) and never decides what the bytes mean: the
caller (``staging.py``) compares the hash with the manifest's and renames the
file into place. A stream the server ends early with an error (``CANCELLED``,
``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ...) is reported as truncated, with the
number of bytes received.

Threads: one ``ArtifactClient`` belongs to the thread that made it; the gRPC
channel's own threads are grpc's. ``close()`` ends the channel.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

import grpc

from harness_pool.deps.errors import ArtifactUnavailableError
from harness_pool.deps.manifest import Artifact

#: The Fn API header naming the SDK worker a call is made for.
WORKER_ID_HEADER = "worker_id"

#: Beam's servers send 2 MiB chunks; leave room for runners that send bigger ones.
_MAX_MESSAGE = 64 << 20


class ArtifactClient:
    def __init__(self, endpoint: str, worker_id: str, clock: Callable[[], float] = time.monotonic,
                 call_timeout: float = 120.0) -> None:
        self.endpoint = endpoint
        self.worker_id = worker_id
        self._clock = clock
        self._call_timeout = call_timeout
        self._channel = grpc.insecure_channel(endpoint, options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
        ])
        from apache_beam.portability.api import beam_artifact_api_pb2_grpc

        self._stub = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(self._channel)
        self.calls = 0

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ArtifactClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timeout(self, deadline: float, action: str) -> float:
        left = deadline - self._clock()
        if left <= 0:
            raise ArtifactUnavailableError(
                f"artifact service at {self.endpoint} (worker {self.worker_id}): no time left "
                f"for {action} (the StartWorker deadline has passed)")
        return min(left, self._call_timeout)

    def _error(self, exc: grpc.RpcError, action: str) -> ArtifactUnavailableError:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        name = code.name if code is not None else "UNKNOWN"
        return ArtifactUnavailableError(
            f"artifact service at {self.endpoint} (worker {self.worker_id}) failed {action}: "
            f"{name}: {details}")

    def resolve(self, artifacts: Sequence[Artifact], deadline: float) -> list[Any]:
        """``ResolveArtifacts`` for ``artifacts``; returns the runner's replacements."""
        from apache_beam.portability.api import beam_artifact_api_pb2, beam_runner_api_pb2

        request = beam_artifact_api_pb2.ResolveArtifactsRequest(artifacts=[
            beam_runner_api_pb2.ArtifactInformation.FromString(a.info) for a in artifacts])
        action = f"resolving {len(artifacts)} artifact(s)"
        self.calls += 1
        try:
            response = self._stub.ResolveArtifacts(
                request, metadata=((WORKER_ID_HEADER, self.worker_id),),
                timeout=self._timeout(deadline, action))
        except grpc.RpcError as exc:
            raise self._error(exc, action) from exc
        return list(response.replacements)

    def fetch(self, artifact: Artifact, replacement: Any, out: IO[bytes],
              deadline: float) -> tuple[str, int]:
        """Streams ``replacement`` (the resolved form of ``artifact``) into ``out``."""
        from apache_beam.portability.api import beam_artifact_api_pb2

        request = beam_artifact_api_pb2.GetArtifactRequest(artifact=replacement)
        action = f"sending {artifact.describe()}"
        hasher = hashlib.sha256()
        size = 0
        self.calls += 1
        try:
            stream = self._stub.GetArtifact(
                request, metadata=((WORKER_ID_HEADER, self.worker_id),),
                timeout=self._timeout(deadline, action))
            for chunk in stream:
                hasher.update(chunk.data)
                out.write(chunk.data)
                size += len(chunk.data)
        except grpc.RpcError as exc:
            raise self._error(exc, f"{action} (stream cut after {size} bytes: truncated)"
                              if size else action) from exc
        return hasher.hexdigest(), size
