"""Fixed-endpoint mode, servicers: the SDK-facing Fn API on the sidecar's address.

Thin shells: unpack the call, ask ``ExternalWorkers`` (and through it the pure
core) who the caller is and where its stage lives, then forward. Every service
is a grpc generic handler with identity (de)serializers, so bytes are forwarded
as bytes; only the control stream (both ways), ``GetProcessBundleDescriptor``
responses and the first message of a data/state stream without a usable
header are decoded.

Threads: each SDK-side stream runs in one gRPC server thread (runner -> SDK
direction); grpc's client machinery runs the ``upstream`` generator (SDK ->
runner) in its own consumer thread. ``context.add_callback`` cancels the
runner-side call when the harness goes away, so no server thread stays
blocked on a dead stream.

A data or state stream whose header does not name its stage is routed by its
first message; a stream that sends none within ``first_message_timeout`` is
cancelled (DEADLINE_EXCEEDED for the harness), so a silent client holds no
thread for longer.

Status codes: missing header INVALID_ARGUMENT; unknown id PERMISSION_DENIED;
a second live claimant ALREADY_EXISTS; no stage FAILED_PRECONDITION; a message
that does not parse INVALID_ARGUMENT; one above ``max_message_bytes``
RESOURCE_EXHAUSTED; runner unreachable UNAVAILABLE. Each names the worker id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_provision_api_pb2
from google.protobuf.message import DecodeError

from harness_pool._grpc import Watchdog, abort, header
from harness_pool.proxy import rewrite
from harness_pool.proxy.core import ExternalId, ProxyError
from harness_pool.proxy.workers import ExternalWorkers, Link

_LOG = logging.getLogger("harness_pool.proxy")

FN = "org.apache.beam.model.fn_execution.v1."
JOB = "org.apache.beam.model.job_management.v1."
#: Seconds the runner gets to read the error responses of a vanished harness
#: before the proxy cancels its control stream.
FAIL_GRACE = 5.0


class _Refused(Exception):
    """Raised inside an upstream pump; the handler turns it into a status."""

    def __init__(self, error: ProxyError) -> None:
        super().__init__(str(error))
        self.error = error


class Proxy:
    def __init__(self, ext: ExternalWorkers, watchdog: Watchdog) -> None:
        self.ext = ext
        self.watchdog = watchdog
        self._counters: dict[str, Any] = {}

    # -- helpers ------------------------------------------------------------------

    def _link(self, context: grpc.ServicerContext, service: str) -> Link:
        wid = header(context)
        try:
            with self.ext._lock:
                worker = self.ext.core.known(wid, service)
            return self.ext.link(worker.wid)
        except ProxyError as exc:
            abort(context, exc)
            raise  # unreachable: abort raises

    def _count(self, link: Link, service: str, n: int) -> None:
        link.count(service, n)
        counter = self._counters.get(service)
        if counter is None:
            counter = self._counters[service] = self.ext.metrics.forwarded.labels(service)
        counter.inc(n)

    def _check_size(self, link: Link, service: str, raw: bytes) -> None:
        if len(raw) > self.ext.max_message_bytes:
            raise _Refused(ProxyError(
                f"{service} from worker '{link.wid}': message of {len(raw)} bytes exceeds "
                f"the proxy limit of {self.ext.max_message_bytes}", "RESOURCE_EXHAUSTED"))

    def _fail(self, context: grpc.ServicerContext, link: Link, service: str, url: str,
              exc: grpc.RpcError, refused: list[ProxyError]) -> None:
        if refused:
            abort(context, refused[0])
        if link.ended.is_set() and not link.error:
            return  # the stage ended normally: close the harness's stream with OK
        if link.ended.is_set():
            abort(context, ProxyError(f"{service}: stage {link.stage.runner_id} of worker "
                                       f"'{link.wid}' ended", "UNAVAILABLE"))
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNAVAILABLE
        context.abort(code, f"{service} for worker '{link.wid}' (stage "
                            f"{link.stage.runner_id}): runner at {url}: "
                            f"{exc.details() if hasattr(exc, 'details') else exc}")

    def _forward_stream(self, link: Link, service: str, method: str, url: str,
                        request_iterator: Iterable[bytes], context: grpc.ServicerContext,
                        first: bytes | None = None) -> Iterator[bytes]:
        """Forwards one bidirectional stream as bytes, both ways."""
        refused: list[ProxyError] = []

        def upstream() -> Iterator[bytes]:
            try:
                if first is not None:
                    self._count(link, service, len(first))
                    yield first
                for raw in request_iterator:
                    self._check_size(link, service, raw)
                    self._count(link, service, len(raw))
                    yield raw
            except _Refused as exc:
                # Keep the runner's stream open until the runner has read the stage's
                # failure on the control stream: closing it first would make the runner
                # report a truncated stream instead of the reason.
                refused.append(exc.error)
                self.ext.fail(link, str(exc.error))
                link.ended.wait(2 * FAIL_GRACE)
                raise
            except Exception:
                return

        try:
            call = link.channel(url).stream_stream(method)(upstream(), metadata=link.header)
        except ProxyError as exc:
            abort(context, exc)
        link.track(call)
        context.add_callback(lambda: self._sdk_side_closed(link, service, call))
        try:
            for raw in call:
                self._count(link, service, len(raw))
                yield raw
        except grpc.RpcError as exc:
            self._fail(context, link, service, url, exc, refused)

    def _sdk_side_closed(self, link: Link, service: str, call: Any) -> None:
        """The harness's side of a stream terminated (runs in a grpc callback thread).

        Mid-stage that means the harness broke: fail the stage through the control
        stream (so the runner reads why) instead of cutting the runner's stream
        first. After the stage, the runner-side twin is cancelled."""
        if call.done():
            return
        if link.ended.is_set():
            call.cancel()  # the stage is over and the harness's half is gone
            return
        self.ext.fail(link, f"SDK harness '{link.wid}' lost its {service} stream mid-stage "
                            f"(stage {link.stage.runner_id})")

    # -- provision and artifacts -----------------------------------------------------

    def get_provision_info(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            beam_provision_api_pb2.GetProvisionInfoRequest.FromString(raw)
            info = self.ext.provision(header(context), context.is_active)
        except DecodeError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"GetProvisionInfo from '{header(context)}': malformed request")
        except ProxyError as exc:
            abort(context, exc)
        return beam_provision_api_pb2.GetProvisionInfoResponse(info=info).SerializeToString()

    def resolve_artifacts(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        link = self._link(context, "ResolveArtifacts")
        url = link.stage.artifact_endpoint
        try:
            return link.channel(url).unary_unary(f"/{JOB}ArtifactRetrievalService/"
                                                 f"ResolveArtifacts")(raw, metadata=link.header)
        except grpc.RpcError as exc:
            self._fail(context, link, "ResolveArtifacts", url, exc, [])
            raise

    def get_artifact(self, raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        link = self._link(context, "GetArtifact")
        url = link.stage.artifact_endpoint
        call = link.channel(url).unary_stream(f"/{JOB}ArtifactRetrievalService/GetArtifact")(
            raw, metadata=link.header)
        context.add_callback(call.cancel)
        try:
            for chunk in call:
                self._count(link, "artifact", len(chunk))
                yield chunk
        except grpc.RpcError as exc:
            self._fail(context, link, "GetArtifact", url, exc, [])

    # -- logging and status -------------------------------------------------------------

    def logging(self, request_iterator: Iterable[bytes], context: grpc.ServicerContext
                ) -> Iterator[bytes]:
        link = self._link(context, "Logging")
        url = link.stage.logging_endpoint
        if not url:  # the runner offers no logging service: accept and drop
            for _ in request_iterator:
                pass
            return
        yield from self._forward_stream(link, "logging", f"/{FN}BeamFnLogging/Logging", url,
                                        request_iterator, context)

    def worker_status(self, request_iterator: Iterable[bytes], context: grpc.ServicerContext
                      ) -> Iterator[bytes]:
        link = self._link(context, "WorkerStatus")
        url = link.stage.status_endpoint
        if not url:
            context.abort(grpc.StatusCode.UNIMPLEMENTED,
                          f"WorkerStatus: stage {link.stage.runner_id} offers no status service")
        yield from self._forward_stream(link, "status", f"/{FN}BeamFnWorkerStatus/WorkerStatus",
                                        url, request_iterator, context)

    # -- control ----------------------------------------------------------------------------

    def get_process_bundle_descriptor(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        link = self._link(context, "GetProcessBundleDescriptor")
        url = link.stage.control_endpoint
        try:
            out = link.channel(url).unary_unary(f"/{FN}BeamFnControl/GetProcessBundleDescriptor")(
                raw, metadata=link.header)
        except grpc.RpcError as exc:
            self._fail(context, link, "GetProcessBundleDescriptor", url, exc, [])
            raise
        pbd = beam_fn_api_pb2.ProcessBundleDescriptor.FromString(out)
        seen = rewrite.descriptor(pbd, self.ext.address)
        self.ext.learned(link, [], [seen])
        return pbd.SerializeToString()

    def control(self, request_iterator: Iterable[bytes], context: grpc.ServicerContext
                ) -> Iterator[bytes]:
        try:
            link = self.ext.open_control(header(context))
        except ProxyError as exc:
            abort(context, exc)
        wid, serial, url = link.wid, link.stage.serial, link.stage.control_endpoint
        ch = link.channel(url)
        try:
            grpc.channel_ready_future(ch).result(timeout=self.ext.settings.start_timeout)
        except grpc.FutureTimeoutError:
            error = f"runner control endpoint {url} unreachable"
            link.error = error
            self.ext.end(wid, serial, error)
            abort(context, ProxyError(f"Control for worker '{wid}': {error}", "UNAVAILABLE"))
        refused: list[ProxyError] = []
        call = ch.stream_stream(f"/{FN}BeamFnControl/Control")(
            self._control_upstream(link, request_iterator, refused), metadata=link.header)
        # No cancel-on-disconnect callback here: when the harness vanishes, the upstream
        # pump first fails its in-flight instructions for the runner, then ends the stage.
        link.track(call)
        link.control_context = context
        self.ext.control_connected(link)
        try:
            for raw in call:
                yield self._down(link, raw)
            self.ext.end(wid, serial)  # the runner closed the stage's control stream
        except grpc.RpcError as exc:
            if link.ended.is_set() and not link.error:
                return  # StopWorker or shutdown ended the stage: close the harness's stream
            error = link.error or (f"runner control stream ended: {exc.code().name}: "
                                   f"{exc.details()}")
            self.ext.end(wid, serial, error)
            self._fail(context, link, "Control", url, exc, refused)
        finally:
            self.ext.end(wid, serial, "harness control stream closed")

    def _down(self, link: Link, raw: bytes) -> bytes:
        """One runner -> harness instruction: learn its bundle id, rewrite descriptors."""
        req = beam_fn_api_pb2.InstructionRequest.FromString(raw)
        link.pending[req.instruction_id] = None
        changed, seen = rewrite.instruction(req, self.ext.address)
        bundles = [req.instruction_id] if req.WhichOneof("request") == "process_bundle" else []
        if bundles or seen:
            self.ext.learned(link, bundles, seen)
        self._count(link, "control", len(raw))
        return req.SerializeToString() if changed else raw

    def _control_upstream(self, link: Link, request_iterator: Iterable[bytes],
                          refused: list[ProxyError]) -> Iterator[bytes]:
        """Harness -> runner responses; if the harness vanishes mid-stage, fail its bundles."""
        try:
            for raw in request_iterator:
                self._check_size(link, "control", raw)
                try:
                    resp = beam_fn_api_pb2.InstructionResponse.FromString(raw)
                except DecodeError as exc:
                    raise _Refused(ProxyError(f"Control from worker '{link.wid}': malformed "
                                              f"InstructionResponse", "INVALID_ARGUMENT")) from exc
                link.pending.pop(resp.instruction_id, None)
                self._count(link, "control", len(raw))
                yield raw
        except _Refused as exc:
            refused.append(exc.error)
            link.error = link.error or str(exc.error)
        except Exception:
            pass
        if link.ended.is_set():
            return
        error = link.error or (f"SDK harness '{link.wid}' disconnected from the sidecar "
                               f"mid-stage (stage {link.stage.runner_id})")
        link.error = error
        for iid in list(link.pending):
            yield beam_fn_api_pb2.InstructionResponse(
                instruction_id=iid, error=error).SerializeToString()
        _LOG.warning("%s; failed %d in-flight instruction(s) for the runner", error,
                     len(link.pending))
        if link.pending:
            link.ended.wait(FAIL_GRACE)  # let the runner read the errors before we cut
        self.ext.end(link.wid, link.stage.serial, error)

    # -- data and state ------------------------------------------------------------------------

    def _routed(self, service: str, request_iterator: Iterator[bytes],
                context: grpc.ServicerContext, parse: Callable[[bytes], str]
                ) -> tuple[Link, bytes | None]:
        first: list[bytes] = []

        def first_instruction() -> str:
            timeout = self.ext.settings.first_message_timeout
            raw = self.watchdog.first(request_iterator, context, timeout)
            if raw is None:
                if not context.is_active():
                    raise ProxyError(f"{service}: stream without a usable worker_id header "
                                     f"sent no message within {timeout:g}s", "DEADLINE_EXCEEDED")
                raise ProxyError(f"{service}: stream without a usable worker_id header closed "
                                 f"before naming an instruction", "INVALID_ARGUMENT")
            first.append(raw)
            try:
                return parse(raw)
            except DecodeError:
                raise ProxyError(f"{service}: malformed first message on a stream without a "
                                 f"usable worker_id header", "INVALID_ARGUMENT") from None

        try:
            link = self.ext.route(header(context), first_instruction, service)
        except ProxyError as exc:
            abort(context, exc)
        return link, (first[0] if first else None)

    def data(self, request_iterator: Iterator[bytes], context: grpc.ServicerContext
             ) -> Iterator[bytes]:
        link, first = self._routed("Data", request_iterator, context, _elements_instruction)
        url = link.stage.data_endpoint or link.stage.control_endpoint
        yield from self._forward_stream(link, "data", f"/{FN}BeamFnData/Data", url,
                                        request_iterator, context, first)

    def state(self, request_iterator: Iterator[bytes], context: grpc.ServicerContext
              ) -> Iterator[bytes]:
        link, first = self._routed(
            "State", request_iterator, context,
            lambda raw: beam_fn_api_pb2.StateRequest.FromString(raw).instruction_id)
        url = link.stage.state_endpoint or link.stage.control_endpoint
        yield from self._forward_stream(link, "state", f"/{FN}BeamFnState/State", url,
                                        request_iterator, context, first)


def _elements_instruction(raw: bytes) -> str:
    elements = beam_fn_api_pb2.Elements.FromString(raw)
    for entry in (*elements.data, *elements.timers):
        if entry.instruction_id:
            return str(entry.instruction_id)
    return ""


def handlers(ext: ExternalWorkers, watchdog: Watchdog) -> list[Any]:
    """The generic handlers for the SDK-facing services, bytes in and out."""
    p = Proxy(ext, watchdog)
    uu, us, ss = (grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler,
                  grpc.stream_stream_rpc_method_handler)
    table = {
        FN + "ProvisionService": {"GetProvisionInfo": uu(p.get_provision_info)},
        JOB + "ArtifactRetrievalService": {"ResolveArtifacts": uu(p.resolve_artifacts),
                                           "GetArtifact": us(p.get_artifact)},
        FN + "BeamFnLogging": {"Logging": ss(p.logging)},
        FN + "BeamFnWorkerStatus": {"WorkerStatus": ss(p.worker_status)},
        FN + "BeamFnControl": {"Control": ss(p.control),
                               "GetProcessBundleDescriptor": uu(p.get_process_bundle_descriptor)},
        FN + "BeamFnData": {"Data": ss(p.data)},
        FN + "BeamFnState": {"State": ss(p.state)},
    }
    return [grpc.method_handlers_generic_handler(name, methods) for name, methods in table.items()]


__all__ = ["ExternalId", "Proxy", "handlers"]
