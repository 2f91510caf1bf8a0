"""``BeamFnExternalWorkerPool``: the runner asks for (and lets go of) an SDK worker.

Two request shapes arrive here:

- Beam's EXTERNAL environment (FnApiRunner, PortableRunner, the Java runner's
  ExternalEnvironmentFactory): ``worker_id`` plus control, logging, artifact
  and provision endpoints;
- PyFlink's ``beam_boot`` in loopback mode: ``worker_id``,
  ``provision_endpoint`` and ``params`` only; the control and logging
  endpoints come from ``GetProvisionInfo``.

Both are answered the same way: parse (the request arrives as bytes, so a
field that is not UTF-8 gets an answer naming it, not a gRPC INTERNAL),
validate against the bounds below, read the provision info with the runner's
``worker_id`` header, make sure the runner's control and logging endpoints
answer, hand a warm worker the assignment and reply once it is connected to
the runner, or reply ``error`` with a bounded sentence that names the stage and
what went wrong. Errors never raise out of StartWorker: the Beam protocol
carries them in ``StartWorkerResponse.error``.

Flood rule: a StartWorker takes a warm worker only after every runner endpoint
the worker must reach before it is ready has answered the sidecar (provision:
GetProvisionInfo within --provision-timeout; control and logging: an HTTP/2
handshake within --start-timeout). Until then the call holds only its own
gRPC thread, never a worker, so runners whose endpoints never answer cannot
starve valid StartWorker calls of warm workers at all. A worker taken for an
endpoint that answered the sidecar but not the worker is stopped after at
most --start-timeout; waiting calls are served in arrival order. Every wait
also ends as soon as the caller cancels or its deadline passes.

Bounds: ``worker_id`` at most 256 printable ASCII characters (it travels as a
gRPC header); at most 4096 ``params``, each name non-empty without ``=`` or
NUL (anything Kubernetes 1.30+ or a shell's exported functions put in an
environment passes), each entry at most 128 KiB (Linux's own limit for one
environment string), 2 MiB in all.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import grpc
from apache_beam.portability.api import (
    beam_fn_api_pb2,
    beam_provision_api_pb2,
    beam_provision_api_pb2_grpc,
)
from google.protobuf.message import DecodeError

from harness_pool._errors import HarnessPoolError, clip, printable
from harness_pool._grpc import WORKER_ID_HEADER, GrpcCaller, http2_answers
from harness_pool.boot import iter_fields
from harness_pool.pool.core import RunnerWorkerId
from harness_pool.pool.dispatch import AssignError, Caller, Dispatcher, Limits
from harness_pool.pool.interpreters import BadInterpreter, job_interpreter
from harness_pool.pool.jobenv import deps_config
from harness_pool.sidecar.settings import SidecarSettings
from harness_pool.v1 import pool_pb2

_LOG = logging.getLogger("harness_pool.sidecar")

SERVICE = "org.apache.beam.model.fn_execution.v1.BeamFnExternalWorkerPool"
MAX_WORKER_ID = 256
MAX_PARAMS = 4096
MAX_PARAM_ENTRY = 128 * 1024
MAX_PARAMS_BYTES = 2 * 1024 * 1024
_SHOWN_PROBLEMS = 5


class BadRequest(HarnessPoolError):
    code = "INVALID_ARGUMENT"


def parse_start_worker(raw: bytes) -> beam_fn_api_pb2.StartWorkerRequest:
    try:
        return beam_fn_api_pb2.StartWorkerRequest.FromString(raw)
    except DecodeError as exc:
        raise BadRequest(f"StartWorker: {_why_undecodable(raw)}") from exc


def _why_undecodable(raw: bytes) -> str:
    """Names the field of a StartWorkerRequest that does not parse (usually not UTF-8)."""
    try:
        wid = ""
        for number, _, payload in iter_fields(raw):
            if not isinstance(payload, bytes):
                continue
            if number == 1:
                try:
                    wid = payload.decode()
                except UnicodeDecodeError:
                    return f"worker_id {printable(payload)} is not valid UTF-8"
            elif number == 10:
                entry = {n: p for n, _, p in iter_fields(payload) if isinstance(p, bytes)}
                key, value = entry.get(1, b""), entry.get(2, b"")
                try:
                    name = key.decode()
                except UnicodeDecodeError:
                    return (f"request for worker '{printable(wid)}': params name "
                            f"{printable(key)} is not valid UTF-8")
                try:
                    value.decode()
                except UnicodeDecodeError:
                    return (f"request for worker '{printable(wid)}': params['{printable(name)}']"
                            " is not valid UTF-8")
    except ValueError:
        pass
    return "the request is not a valid StartWorkerRequest (a string field is not UTF-8?)"


def validate_request(req: beam_fn_api_pb2.StartWorkerRequest) -> RunnerWorkerId:
    """Checks a StartWorkerRequest; raises BadRequest naming the fields at fault."""
    problems = []
    wid = req.worker_id
    if not wid.strip():
        problems.append("worker_id is empty")
    elif len(wid) > MAX_WORKER_ID:
        problems.append(f"worker_id is {len(wid)} characters; at most {MAX_WORKER_ID}")
    elif not all(" " <= c <= "~" for c in wid):
        problems.append("worker_id must be printable ASCII (it travels as a gRPC header)")
    if not req.control_endpoint.url and not req.provision_endpoint.url:
        problems.append("neither control_endpoint nor provision_endpoint is set")
    if len(req.params) > MAX_PARAMS:
        problems.append(f"{len(req.params)} params; at most {MAX_PARAMS}")
    total = 0
    for key, value in req.params.items():
        size = len(key.encode()) + len(value.encode()) + 2
        total += size
        if not key or "=" in key or "\x00" in key:
            problems.append(f"params name '{printable(key)}' is not an environment variable "
                            "name (empty, or has '=' or NUL)")
        elif "\x00" in value:
            problems.append(f"params['{printable(key)}'] contains a NUL byte")
        elif size > MAX_PARAM_ENTRY:
            problems.append(f"params['{printable(key)}'] is {size} bytes; an environment "
                            f"entry holds at most {MAX_PARAM_ENTRY}")
    if total > MAX_PARAMS_BYTES:
        problems.append(f"params total {total} bytes; at most {MAX_PARAMS_BYTES}")
    workdir = req.params.get("_PYTHON_WORKING_DIR")
    if workdir and "\x00" not in workdir and len(workdir) < 4096 and not os.path.isdir(workdir):
        problems.append(f"params['_PYTHON_WORKING_DIR'] '{printable(workdir)}' is not a "
                        "directory")
    if problems:
        shown = problems[:_SHOWN_PROBLEMS]
        if len(problems) > _SHOWN_PROBLEMS:
            shown.append(f"and {len(problems) - _SHOWN_PROBLEMS} more problems")
        raise BadRequest(clip(f"StartWorker for worker '{printable(wid)}': "
                              + "; ".join(shown)))
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
                metadata=((WORKER_ID_HEADER, runner_id),),
                timeout=max(0.001, timeout),
            )
    except grpc.RpcError as exc:
        raise AssignError(clip(
            f"stage {runner_id}: provision endpoint {printable(endpoint)} did not answer "
            f"GetProvisionInfo ({exc.code().name}: {exc.details()})"),
            "provision_unreachable",
        ) from exc
    return response.info


def probe_endpoints(runner_id: str, endpoints: dict[str, str], timeout: float,
                    caller: Caller) -> None:
    """Waits until each runner endpoint completes an HTTP/2 handshake (the flood rule).

    Raises AssignError naming the first endpoint that does not answer in time.
    """
    deadline = time.monotonic() + timeout
    for what, url in endpoints.items():
        if not url:
            continue
        if http2_answers(url, max(0.0, deadline - time.monotonic()), caller.active):
            continue
        if not caller.active():
            raise AssignError(f"stage {runner_id}: StartWorker was cancelled by its caller",
                              "cancelled")
        raise AssignError(clip(
            f"stage {runner_id}: runner {what} endpoint {printable(url)} did not answer "
            f"within {timeout:g}s; no worker was taken"), "runner_unreachable")


def build_assignment(
    req: beam_fn_api_pb2.StartWorkerRequest, info: beam_provision_api_pb2.ProvisionInfo | None
) -> pool_pb2.Assignment:
    control = req.control_endpoint.url or (info.control_endpoint.url if info else "")
    if not control:
        raise BadRequest(
            f"StartWorker for worker '{printable(req.worker_id)}': no control endpoint in the "
            f"request nor in the provision info from {printable(req.provision_endpoint.url)}"
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


class ExternalWorkerPoolServicer:
    """StartWorker and StopWorker on raw bytes (see ``handler``)."""

    def __init__(self, dispatcher: Dispatcher, settings: SidecarSettings,
                 on_error: Callable[[str], None] = lambda reason: None) -> None:
        self.dispatcher = dispatcher
        self.settings = settings
        self._on_error = on_error

    def start_worker(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        return self.start(raw, GrpcCaller(context)).SerializeToString()

    def start(self, raw: bytes, caller: Caller) -> beam_fn_api_pb2.StartWorkerResponse:
        s = self.settings
        wid = ""
        dispatched = False  # errors from dispatch are counted by the dispatcher itself
        try:
            request = parse_start_worker(raw)
            wid = request.worker_id
            runner_id = validate_request(request)
            self.dispatcher.check(runner_id)
            info = None
            limits = Limits(s.assign_timeout, s.start_timeout,
                            s.deps.prepare_timeout).within(caller)
            if request.provision_endpoint.url:
                left = caller.remaining()
                info = fetch_provision_info(
                    request.provision_endpoint.url, runner_id,
                    s.provision_timeout if left is None else min(s.provision_timeout, left))
            assignment = build_assignment(request, info)
            try:  # a job's own Python (issue 9)
                assignment.interpreter = job_interpreter(
                    request.params, scope=s.deps.job_interpreters)
            except BadInterpreter as exc:
                raise BadRequest(clip(f"StartWorker for worker '{printable(wid)}': {exc}")
                                 ) from exc
            assignment.deps.CopyFrom(deps_config(s.deps, limits.prepare_timeout))
            probe_endpoints(runner_id, {"control": assignment.control_endpoint,
                                        "logging": assignment.logging_endpoint},
                            limits.start_timeout, caller)
            dispatched = True
            pool_id, seconds = self.dispatcher.assign(
                runner_id, assignment, limits.within(caller), caller)
        except HarnessPoolError as exc:
            reason = getattr(exc, "reason", "bad_request" if isinstance(exc, BadRequest)
                             else type(exc).__name__)
            if not dispatched or not isinstance(exc, AssignError):
                self._on_error(reason)
            message = clip(str(exc))
            _LOG.warning("StartWorker refused: %s", message,
                         extra={"runner_worker_id": printable(wid)})
            return beam_fn_api_pb2.StartWorkerResponse(error=message)
        _LOG.info("stage %s ready on worker %s after %.1f ms", runner_id, pool_id,
                  seconds * 1000, extra={"pool_id": pool_id, "runner_worker_id": runner_id})
        return beam_fn_api_pb2.StartWorkerResponse()

    def stop_worker(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            request = beam_fn_api_pb2.StopWorkerRequest.FromString(raw)
        except DecodeError:
            return _stop_error("StopWorker: the request is not a valid StopWorkerRequest")
        if not request.worker_id:
            return _stop_error("StopWorker: worker_id is empty")
        if not self.dispatcher.stop(RunnerWorkerId(request.worker_id)):
            # The stage usually ended on its own first (control stream closed): not an error.
            _LOG.debug("StopWorker for %s: no live worker holds it", printable(request.worker_id))
        return beam_fn_api_pb2.StopWorkerResponse().SerializeToString()

    def handler(self) -> grpc.GenericRpcHandler:
        """The service with identity (de)serializers: requests arrive as bytes."""
        return grpc.method_handlers_generic_handler(SERVICE, {
            "StartWorker": grpc.unary_unary_rpc_method_handler(self.start_worker),
            "StopWorker": grpc.unary_unary_rpc_method_handler(self.stop_worker),
        })


def _stop_error(message: str) -> bytes:
    return beam_fn_api_pb2.StopWorkerResponse(error=message).SerializeToString()
