"""Fixed-endpoint mode, shell: ``ExternalWorkers`` wires the pure ``ExternalCore``
to the sidecar (dispatch, status, health, metrics, shutdown) and owns the
runner-side gRPC channels of every live stage.

Threads: gRPC server threads call in from the servicers (``services.py``) and
from the runner's StartWorker/StopWorker; grpc's own request-consumer threads
run the upstream pumps. The only thread started here is a short-lived one that
closes a stage's channels after its last runner-side call ended gracefully
(that end is reported in grpc's event thread, which must not close a channel).

Lock order: ``ExternalWorkers._lock`` (guards the core, every ``Link`` map and
``_links``) is never held while calling grpc, waiting, or calling the pooled
dispatcher; ``Link`` events are set outside it where possible. A ``Link``'s
byte counters are plain ints updated by the one pump that owns the stream
(GIL-atomic ``+=`` on distinct attributes is good enough for status).

Invariants: a ``Link`` exists exactly while its id's stage is live in the core
(same ``serial``); ending it cancels every runner-side call and closes its
channels, so no stream outlives its stage.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from apache_beam.portability.api import beam_provision_api_pb2

from harness_pool._grpc import WORKER_ID_HEADER
from harness_pool.pool.core import RunnerWorkerId
from harness_pool.pool.dispatch import Caller
from harness_pool.proxy import rewrite
from harness_pool.proxy.core import (
    ExternalCore,
    ExternalId,
    ExternalState,
    ProxyError,
    RunnerId,
    Stage,
)
from harness_pool.v1 import pool_pb2

_LOG = logging.getLogger("harness_pool.proxy")


@dataclasses.dataclass(frozen=True)
class ProxySettings:
    """What fixed-endpoint mode needs of the sidecar's settings (see ``SidecarSettings``)."""

    external_worker_ids: tuple[str, ...]
    pooled_workers: int  # pooled workers behind the external ones; 0: external only
    start_timeout: float
    provision_hold_timeout: float
    max_message_bytes: int
    first_message_timeout: float

    @property
    def channel_options(self) -> list[tuple[str, int]]:
        """Runner-side channels carry the same messages as the sidecar's listeners."""
        return [("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes)]


class Link:
    """Runtime of one live stage of one external id: channels, calls, events, counters."""

    def __init__(self, wid: ExternalId, stage: Stage,
                 channel_options: list[tuple[str, int]] | None = None) -> None:
        self.wid = wid
        self._channel_options = channel_options or []
        self.stage = stage
        self.connected = threading.Event()  # control stream forwarded to the runner
        self.ended = threading.Event()
        self.error = ""  # why the stage ended badly (start failure, harness gone, ...)
        self.bytes: dict[str, int] = {}
        self.pending: dict[str, None] = {}  # instruction ids sent down, not yet answered
        self.provision_bytes = b""  # the runner's ProvisionInfo, serialized
        self.control_context: Any = None  # the harness's control stream, once connected
        self._channels: dict[str, grpc.Channel] = {}
        self._calls: list[Any] = []
        self._lock = threading.Lock()  # leaf lock: channels and calls only

    @property
    def header(self) -> tuple[tuple[str, str]]:
        return ((WORKER_ID_HEADER, str(self.stage.runner_id)),)

    def channel(self, url: str) -> grpc.Channel:
        with self._lock:
            if self.ended.is_set():
                raise ProxyError(f"stage {self.stage.runner_id} of worker '{self.wid}' has "
                                 f"ended", "UNAVAILABLE")
            ch = self._channels.get(url)
            if ch is None:
                ch = self._channels[url] = grpc.insecure_channel(url,
                                                                options=self._channel_options)
            return ch

    def track(self, call: Any) -> None:
        with self._lock:
            if self.ended.is_set():
                call.cancel()
                return
            self._calls.append(call)
        call.add_done_callback(self._call_done)

    def _call_done(self, call: Any) -> None:
        with self._lock:
            if call in self._calls:
                self._calls.remove(call)
            last = self.ended.is_set() and not self._calls
        if last:
            # This runs in grpc's own event thread for the channel, and a channel must
            # not be closed from its own callback (it deadlocks): close it elsewhere.
            threading.Thread(target=self._close_channels, name=f"close-{self.wid}",
                             daemon=True).start()

    def ended_cleanly(self) -> bool:
        with self._lock:
            return not self._calls

    def count(self, service: str, n: int) -> None:
        self.bytes[service] = self.bytes.get(service, 0) + n

    def close(self, graceful: bool) -> None:
        """Ends the link. Graceful (the stage ended normally): runner-side streams end
        as the runner closes them, channels close after the last one; otherwise every
        runner-side call is cancelled now."""
        with self._lock:
            self.ended.set()
            self.connected.set()  # wakes a StartWorker still waiting; it checks ``ended``
            calls = [] if graceful else list(self._calls)
            idle = not self._calls
        for call in calls:
            call.cancel()
        if idle or not graceful:
            self._close_channels()

    def _close_channels(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            ch.close()


class ExternalWorkers:
    """Everything the sidecar needs from fixed-endpoint mode (see ``Sidecar.__init__``)."""

    def __init__(self, settings: ProxySettings, metrics: Any,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.on_change = on_change
        self.core = ExternalCore(settings.external_worker_ids)
        self.address = ""  # the sidecar's reachable HOST:PORT, set once it is bound
        self.max_message_bytes = settings.max_message_bytes
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._links: dict[ExternalId, Link] = {}
        self._stopped = threading.Event()
        self._started = time.monotonic()
        self._forwarded: dict[str, int] = {}  # bytes forwarded by ended stages, per id
        self._lingering: set[Link] = set()  # ended gracefully, runner streams still open

    # -- sidecar hooks ------------------------------------------------------------

    def set_address(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        if host in ("0.0.0.0", "::", "[::]"):
            address = f"127.0.0.1:{port}"
        self.address = address

    def can_serve(self) -> bool:
        with self._lock:
            return self.core.count(ExternalState.WAITING) > 0 and not self.core.draining

    def drain(self) -> None:
        """No new stages; held provision calls are answered UNAVAILABLE."""
        with self._cond:
            self.core.draining = True
            self._cond.notify_all()

    def wait_until_no_stage(self, timeout: float) -> bool:
        """Waits (during a drain) for live external stages to end; True when none is left."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.core.live():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def stop(self) -> None:
        """Ends every live stage (runner-side calls cancelled, harness streams closed)."""
        self._stopped.set()
        with self._cond:
            self.core.draining = True
            live = [(w.wid, w.stage.serial) for w in self.core.live()]  # type: ignore[union-attr]
            self._cond.notify_all()
        for wid, serial in live:
            self.end(wid, serial, "sidecar stopped")
        with self._lock:
            lingering, self._lingering = list(self._lingering), set()
        for link in lingering:
            link.close(graceful=False)

    def snapshot(self) -> list[pool_pb2.WorkerStatus]:
        now = time.monotonic()
        with self._lock:
            out = []
            for w in self.core.workers.values():
                link = self._links.get(w.wid)
                out.append(pool_pb2.WorkerStatus(
                    pool_id=w.wid, kind="external", state=str(w.state),
                    runner_worker_id=w.stage.runner_id if w.stage else "",
                    uptime_seconds=now - self._started, assignments_served=w.stages_served,
                    seconds_in_state=now - w.since if w.since else now - self._started,
                    connected=w.state is not ExternalState.DISCONNECTED,
                    bytes_forwarded=self._forwarded.get(w.wid, 0) + (
                        sum(link.bytes.values()) if link else 0),
                    last_error=w.last_error))
            return out

    def _changed(self) -> None:
        """Metrics and health after a state change (called without the lock)."""
        with self._lock:
            counts = {s: self.core.count(s) for s in ExternalState}
        for state, n in counts.items():
            self.metrics.external.labels(str(state)).set(n)
        self.on_change()

    # -- provisioning ---------------------------------------------------------------

    def provision(self, header: str | None, is_active: Callable[[], bool]
                  ) -> beam_provision_api_pb2.ProvisionInfo:
        """GetProvisionInfo: held until this id gets a stage; raises ProxyError otherwise."""
        deadline = time.monotonic() + self.settings.provision_hold_timeout
        with self._cond:
            stage = self.core.hold(header, time.monotonic())
            wid = ExternalId(header or "")
        if stage is None:
            self._changed()
            _LOG.info("external worker %s waiting for a stage (holding its GetProvisionInfo "
                      "up to %.0fs)", wid, self.settings.provision_hold_timeout)
            stage = self._wait_for_stage(wid, deadline, is_active)
        info = self._provision_info(wid, stage)
        if not is_active():  # the boot left just as its stage arrived: fail the start now
            link = self.link(wid, stage.serial)
            self.fail(link, f"external worker {wid} went away before reading its provision "
                            f"info")
        return info

    def _wait_for_stage(self, wid: ExternalId, deadline: float,
                        is_active: Callable[[], bool]) -> Stage:
        with self._cond:
            while True:
                worker = self.core.workers[wid]
                if worker.stage is not None:
                    return worker.stage
                left = deadline - time.monotonic()
                gone = not is_active()
                if left <= 0 or gone or self.core.draining:
                    self.core.unhold(wid, time.monotonic())
                    break
                self._cond.wait(min(left, 0.5))
        self._changed()
        if gone:
            raise ProxyError(f"GetProvisionInfo: worker '{wid}' went away while held",
                             "CANCELLED")
        why = "sidecar is shutting down" if self.core.draining else (
            f"no stage assigned within {self.settings.provision_hold_timeout:.0f}s")
        raise ProxyError(f"GetProvisionInfo: worker '{wid}': {why}; retry", "UNAVAILABLE")

    def _provision_info(self, wid: ExternalId, stage: Stage
                        ) -> beam_provision_api_pb2.ProvisionInfo:
        link = self.link(wid, stage.serial)
        info = beam_provision_api_pb2.ProvisionInfo.FromString(link.provision_bytes)
        return rewrite.provision_info(info, self.address)

    # -- links -----------------------------------------------------------------------

    def link(self, wid: ExternalId, serial: int | None = None) -> Link:
        with self._lock:
            link = self._links.get(wid)
        if link is None or (serial is not None and link.stage.serial != serial):
            raise ProxyError(f"worker '{wid}' has no live stage", "FAILED_PRECONDITION")
        return link

    def open_control(self, header: str | None) -> Link:
        with self._lock:
            worker = self.core.connect_control(header, time.monotonic())
            link = self._links[worker.wid]
        return link

    def control_connected(self, link: Link) -> None:
        link.connected.set()
        self._changed()

    def learned(self, link: Link, instruction_ids: list[str],
                endpoints: list[rewrite.RunnerEndpoints]) -> None:
        with self._lock:
            for iid in instruction_ids:
                link.stage.issued(iid)
            for ep in endpoints:
                link.stage.data_endpoint = ep.data or link.stage.data_endpoint
                link.stage.state_endpoint = ep.state or link.stage.state_endpoint

    def route(self, header: str | None, first_instruction: Callable[[], str],
              service: str) -> Link:
        """The stage a data/state stream belongs to (rules in ``proxy.core``)."""
        with self._lock:
            worker = self.core.route_header(header)
        if worker is None:
            iid = first_instruction()
            with self._lock:
                worker = self.core.route_instruction(iid, service)
            _LOG.debug("%s stream (header %r) routed by instruction %s to %s", service,
                       header, iid, worker.wid)
        return self.link(worker.wid)

    def fail(self, link: Link, error: str) -> None:
        """Fails the stage of ``link`` for the runner with ``error``.

        The harness's control stream is cancelled; its upstream pump then answers
        every in-flight instruction to the runner with ``error`` and ends the stage
        (see ``services.Proxy._control_upstream``). Before the control stream is up
        there is nothing to answer: the stage just ends.
        """
        link.error = link.error or error
        if link.control_context is not None:
            link.control_context.cancel()
        else:
            self.end(link.wid, link.stage.serial, error)

    def end(self, wid: ExternalId, serial: int, error: str = "") -> None:
        """Ends stage ``serial`` of ``wid`` (idempotent): release, cancel, close."""
        with self._cond:
            current = self._links.get(wid)
            if current is not None and current.stage.serial == serial:
                error = error or current.error  # a failure recorded before the end
            stage = self.core.end(wid, serial, time.monotonic(), error)
            link = self._links.pop(wid, None) if stage is not None else None
            if link is not None:
                self._forwarded[wid] = self._forwarded.get(wid, 0) + sum(link.bytes.values())
            self._cond.notify_all()
        if link is None:
            return
        link.error = link.error or error
        link.close(graceful=not link.error and not self._stopped.is_set())
        if not link.ended_cleanly():
            with self._lock:
                self._lingering = {k for k in self._lingering if not k.ended_cleanly()}
                self._lingering.add(link)
        self._changed()
        if error:
            _LOG.warning("external worker %s: stage %s ended: %s; waiting for its boot to "
                         "call GetProvisionInfo again", wid, stage.runner_id, error)  # type: ignore[union-attr]
        else:
            _LOG.info("external worker %s: stage %s ended; waiting for its boot to call "
                      "GetProvisionInfo again", wid, stage.runner_id)  # type: ignore[union-attr]

    # -- StartWorker / StopWorker ------------------------------------------------------

    def try_assign(self, runner_id: RunnerWorkerId, assignment: pool_pb2.Assignment,
                   wait: float, caller: Caller) -> Link | None:
        """Claims a waiting external id for the stage, waiting up to ``wait`` seconds
        (less if the caller goes away first)."""
        endpoints = dict(
            control_endpoint=assignment.control_endpoint,
            logging_endpoint=assignment.logging_endpoint,
            artifact_endpoint=assignment.artifact_endpoint,
            provision_endpoint=assignment.provision_endpoint,
            status_endpoint=assignment.status_endpoint)
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                worker = self.core.claim(RunnerId(runner_id), endpoints, time.monotonic())
                if worker is not None:
                    link = Link(worker.wid, worker.stage,  # type: ignore[arg-type]
                                self.settings.channel_options)
                    link.provision_bytes = assignment.provision_info
                    self._links[worker.wid] = link
                    self._cond.notify_all()
                    break
                left = deadline - time.monotonic()
                if left <= 0 or not caller.active():
                    return None
                self._cond.wait(min(left, 0.5))
        self._changed()
        _LOG.info("external worker %s assigned to stage %s", link.wid, runner_id)
        return link

    def holder(self, runner_id: str) -> str:
        """The external id serving ``runner_id``; empty when none does."""
        with self._lock:
            worker = self.core.holder_of(runner_id)
            return worker.wid if worker is not None else ""

    def describe(self) -> str:
        with self._lock:
            return self.core.summary()

    def stop_stage(self, runner_id: RunnerWorkerId) -> bool:
        with self._lock:
            worker = self.core.holder_of(runner_id)
            serial = worker.stage.serial if worker is not None else None  # type: ignore[union-attr]
        if worker is None:
            return False
        self.end(worker.wid, serial, "")  # type: ignore[arg-type]
        return True
