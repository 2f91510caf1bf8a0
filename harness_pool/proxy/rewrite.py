"""Endpoint rewriting: point the harness at the sidecar wherever the runner named its servers.

Pure functions over protobuf messages (no grpc, no I/O). Each rewrite returns
what the runner had named, so the shell can forward the harness's later calls
to the right runner server.

Where endpoints hide:
- ``ProvisionInfo``: control, logging, artifact and status endpoints;
- ``ProcessBundleDescriptor`` (from a ``register`` instruction and from
  ``GetProcessBundleDescriptor``): the ``RemoteGrpcPort`` payload of every data
  source (``beam:runner:source:v1``) and sink (``beam:runner:sink:v1``)
  transform, ``state_api_service_descriptor`` and ``timer_api_service_descriptor``
  (timers travel on the data stream).
"""

from __future__ import annotations

import dataclasses

from apache_beam.portability.api import (
    beam_fn_api_pb2,
    beam_provision_api_pb2,
)

DATA_URNS = frozenset({"beam:runner:source:v1", "beam:runner:sink:v1"})


@dataclasses.dataclass
class RunnerEndpoints:
    """Runner servers named inside one descriptor ("" where none was named)."""

    data: str = ""
    state: str = ""


def provision_info(info: beam_provision_api_pb2.ProvisionInfo, sidecar: str
                   ) -> beam_provision_api_pb2.ProvisionInfo:
    """A copy of ``info`` whose Fn API endpoints all name ``sidecar``.

    The status endpoint is pointed at the sidecar only when the runner offers one.
    """
    out = beam_provision_api_pb2.ProvisionInfo()
    out.CopyFrom(info)
    out.control_endpoint.url = sidecar
    out.logging_endpoint.url = sidecar
    out.artifact_endpoint.url = sidecar
    if info.status_endpoint.url:
        out.status_endpoint.url = sidecar
    return out


def descriptor(pbd: beam_fn_api_pb2.ProcessBundleDescriptor, sidecar: str) -> RunnerEndpoints:
    """Rewrites ``pbd`` in place to name ``sidecar``; returns the runner's endpoints."""
    seen = RunnerEndpoints()
    for transform in pbd.transforms.values():
        if transform.spec.urn not in DATA_URNS:
            continue
        port = beam_fn_api_pb2.RemoteGrpcPort.FromString(transform.spec.payload)
        if port.api_service_descriptor.url and port.api_service_descriptor.url != sidecar:
            seen.data = port.api_service_descriptor.url
            port.api_service_descriptor.url = sidecar
            transform.spec.payload = port.SerializeToString()
    if pbd.HasField("timer_api_service_descriptor") and pbd.timer_api_service_descriptor.url:
        seen.data = seen.data or pbd.timer_api_service_descriptor.url
        pbd.timer_api_service_descriptor.url = sidecar
    if pbd.HasField("state_api_service_descriptor") and pbd.state_api_service_descriptor.url:
        seen.state = pbd.state_api_service_descriptor.url
        pbd.state_api_service_descriptor.url = sidecar
    return seen


def instruction(req: beam_fn_api_pb2.InstructionRequest, sidecar: str
                ) -> tuple[bool, list[RunnerEndpoints]]:
    """Rewrites the descriptors of a ``register`` instruction in place.

    Returns (changed, the runner endpoints of each rewritten descriptor).
    """
    if req.WhichOneof("request") != "register":
        return False, []
    seen = [descriptor(pbd, sidecar) for pbd in req.register.process_bundle_descriptor]
    return bool(seen), seen
