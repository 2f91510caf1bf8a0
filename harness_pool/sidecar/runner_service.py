"""``BeamFnExternalWorkerPool``: the runner asks for (and lets go of) an SDK worker.

Two request shapes arrive here:

- Beam's EXTERNAL environment (FnApiRunner, PortableRunner, the Java runner's
  ExternalEnvironmentFactory): ``worker_id`` plus control, logging, artifact
  and provision endpoints;
- PyFlink's ``beam_boot`` in loopback mode: ``worker_id``,
  ``provision_endpoint`` and ``params`` only; the control and logging
  endpoints come from ``GetProvisionInfo``.

Both are answered the same way: validate, read the provision info with the
runner's ``worker_id`` header, hand a warm worker the assignment and reply
once it is connected to the runner, or reply ``error`` with a sentence that
names the stage and what went wrong. Errors never raise out of StartWorker:
the Beam protocol carries them in ``StartWorkerResponse.error``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from typing import Protocol

import grpc
from apache_beam.portability.api import (
    beam_fn_api_pb2,
    beam_fn_api_pb2_grpc,
    beam_provision_api_pb2,
    beam_provision_api_pb2_grpc,
)

from harness_pool._errors import HarnessPoolError
from harness_pool.pool.core import RunnerWorkerId
from harness_pool.pool.pool import AssignError
from harness_pool.sidecar.settings import SidecarSettings
from harness_pool.v1 import pool_pb2

_LOG = logging.getLogger("harness_pool.sidecar")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class Dispatcher(Protocol):
    """Who serves a stage: the pooled workers (and, in fixed-endpoint mode, external ones)."""

    def assign(self, runner_id: RunnerWorkerId, assignment: pool_pb2.Assignment,
               assign_timeout: float, start_timeout: float) -> tuple[str, float]: ...

    def stop(self, runner_id: RunnerWorkerId) -> bool: ...


class BadRequest(HarnessPoolError):
    code = "INVALID_ARGUMENT"


def validate_request(req: beam_fn_api_pb2.StartWorkerRequest) -> RunnerWorkerId:
    """Checks a StartWorkerRequest; raises BadRequest naming every field at fault."""
    problems = []
    wid = req.worker_id
    if not wid.strip():
        problems.append("worker_id is empty")
    if not req.control_endpoint.url and not req.provision_endpoint.url:
        problems.append("neither control_endpoint nor provision_endpoint is set")
    for key, value in req.params.items():
        if not _ENV_NAME.match(key):
            problems.append(f"params key {key!r} is not an environment variable name")
        elif "\x00" in value:
            problems.append(f"params[{key!r}] contains a NUL byte")
    workdir = req.params.get("_PYTHON_WORKING_DIR")
    if workdir and not os.path.isdir(workdir):
        problems.append(f"params['_PYTHON_WORKING_DIR'] {workdir!r} is not a directory")
    if problems:
        raise BadRequest(f"StartWorker for worker '{wid}': " + "; ".join(problems))
    return RunnerWorkerId(wid)


def fetch_provision_info(
    endpoint: str, runner_id: str, timeout: float
) -> beam_provision_api_pb2.ProvisionInfo:
    """GetProvisionInfo from the runner, sent with the runner's ``worker_id`` header."""
    try:
        with grpc.insecure_channel(endpoint) as channel:
            stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
            response = stub.GetProvisionInfo(
                beam_provision_api_pb2.GetProvisionInfoRequest(),
                metadata=(("worker_id", runner_id),),
                timeout=timeout,
            )
    except grpc.RpcError as exc:
        raise AssignError(
            f"stage {runner_id}: provision endpoint {endpoint} did not answer "
            f"GetProvisionInfo ({exc.code().name}: {exc.details()})",
            "provision_unreachable",
        ) from exc
    return response.info


def build_assignment(
    req: beam_fn_api_pb2.StartWorkerRequest, info: beam_provision_api_pb2.ProvisionInfo | None
) -> pool_pb2.Assignment:
    control = req.control_endpoint.url or (info.control_endpoint.url if info else "")
    if not control:
        raise BadRequest(
            f"StartWorker for worker '{req.worker_id}': no control endpoint in the request "
            f"nor in the provision info from {req.provision_endpoint.url}"
        )
    return pool_pb2.Assignment(
        runner_worker_id=req.worker_id,
        control_endpoint=control,
        logging_endpoint=req.logging_endpoint.url or (info.logging_endpoint.url if info else ""),
        artifact_endpoint=req.artifact_endpoint.url or (info.artifact_endpoint.url if info else ""),
        provision_endpoint=req.provision_endpoint.url,
        status_endpoint=info.status_endpoint.url if info else "",
        params=dict(req.params),
        provision_info=info.SerializeToString() if info else b"",
    )


class ExternalWorkerPoolServicer(beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer):
    def __init__(self, dispatcher: Dispatcher, settings: SidecarSettings,
                 on_error: Callable[[str], None] = lambda reason: None) -> None:
        self.dispatcher = dispatcher
        self.settings = settings
        self._on_error = on_error

    def StartWorker(
        self, request: beam_fn_api_pb2.StartWorkerRequest, context: grpc.ServicerContext
    ) -> beam_fn_api_pb2.StartWorkerResponse:
        try:
            runner_id = validate_request(request)
            info = None
            if request.provision_endpoint.url:
                info = fetch_provision_info(request.provision_endpoint.url, runner_id,
                                            self.settings.provision_timeout)
            assignment = build_assignment(request, info)
            pool_id, seconds = self.dispatcher.assign(
                runner_id, assignment, self.settings.assign_timeout, self.settings.start_timeout)
        except HarnessPoolError as exc:
            reason = getattr(exc, "reason", "bad_request" if isinstance(exc, BadRequest)
                             else type(exc).__name__)
            if not isinstance(exc, AssignError):
                self._on_error(reason)
            _LOG.warning("StartWorker refused: %s", exc,
                         extra={"runner_worker_id": request.worker_id})
            return beam_fn_api_pb2.StartWorkerResponse(error=str(exc))
        _LOG.info("stage %s ready on worker %s after %.1f ms", runner_id, pool_id,
                  seconds * 1000, extra={"pool_id": pool_id, "runner_worker_id": runner_id})
        return beam_fn_api_pb2.StartWorkerResponse()

    def StopWorker(
        self, request: beam_fn_api_pb2.StopWorkerRequest, context: grpc.ServicerContext
    ) -> beam_fn_api_pb2.StopWorkerResponse:
        if not request.worker_id:
            return beam_fn_api_pb2.StopWorkerResponse(error="StopWorker: worker_id is empty")
        if not self.dispatcher.stop(RunnerWorkerId(request.worker_id)):
            # The stage usually ended on its own first (control stream closed): not an error.
            _LOG.debug("StopWorker for %s: no live worker holds it", request.worker_id)
        return beam_fn_api_pb2.StopWorkerResponse()
