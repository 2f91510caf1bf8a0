"""Fixed-endpoint mode, pure core: which external worker gets which stage, and
where a data or state stream belongs.

No grpc, sockets, threads or clocks here: every method takes ``now`` where time
matters and returns a decision or raises a ``ProxyError`` whose ``code`` names
the exact gRPC status. The shell (``harness_pool.proxy.workers``) holds one lock
around every call into an ``ExternalCore`` and acts on what it returns outside
that lock.

Life of an external worker id (``ExternalState``)::

    DISCONNECTED --GetProvisionInfo held--> WAITING --StartWorker--> ASSIGNED
         ^   ^                                 |                        |
         |   +------ held call gone / timeout --+     control connected  v
         +------------------------ stage ended ------------------- BUSY

Invariants:
- an external id has at most one held GetProvisionInfo and at most one live
  control stream; a second claimant is refused (ALREADY_EXISTS, naming the id);
- an external id serves at most one stage at a time, and a runner worker id is
  held by at most one external id;
- an id becomes assignable again only through a fresh GetProvisionInfo after
  its stage ended (the unmodified harness exits when its control stream ends);
- instruction ids are recorded per stage when a ProcessBundleRequest passes
  down the control stream, i.e. before the harness can name them on a data or
  state stream, and forgotten when the stage ends.

Routing rule for data and state streams (``route``), first match wins:
1. the ``worker_id`` header names an external id with a live stage -> that stage;
2. the header names the runner worker id of a live stage -> that stage;
3. the stream's first message names an instruction id that exactly one live
   stage has issued -> that stage (the Python SDK's state channel takes its
   header from the WORKER_ID environment variable, which may be absent or
   differ; Flink's own state service also routes by instruction id);
4. several live stages issued that instruction id -> refused (FAILED_PRECONDITION,
   naming the id and the candidates): guessing could hand one job's state to
   another; no stage issued it -> NOT_FOUND.
A stream stays bound to the stage it was first routed to: one harness process
serves one stage, and its channels do not outlive it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import OrderedDict
from collections.abc import Iterable
from typing import NewType

from harness_pool._errors import HarnessPoolError, IllegalTransition

ExternalId = NewType("ExternalId", str)
RunnerId = NewType("RunnerId", str)

#: How many process-bundle instruction ids a stage remembers for routing. A
#: harness names only the bundles it is working on, a handful at a time.
INSTRUCTION_MEMORY = 4096


class ProxyError(HarnessPoolError):
    """A refusal; ``code`` is the gRPC status name the shell answers with."""

    code = "FAILED_PRECONDITION"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class ExternalState(enum.Enum):
    DISCONNECTED = "disconnected"  # no boot waiting: harness not started, or between stages
    WAITING = "waiting"  # its boot's GetProvisionInfo is held here: can take a stage
    ASSIGNED = "assigned"  # StartWorker chose it; waiting for its control stream
    BUSY = "busy"  # control stream forwarded to the runner: serving the stage

    def __str__(self) -> str:
        return self.value


_LEGAL = {
    ExternalState.DISCONNECTED: {ExternalState.WAITING},
    ExternalState.WAITING: {ExternalState.DISCONNECTED, ExternalState.ASSIGNED},
    ExternalState.ASSIGNED: {ExternalState.BUSY, ExternalState.DISCONNECTED},
    ExternalState.BUSY: {ExternalState.DISCONNECTED},
}


@dataclasses.dataclass
class Stage:
    """One assignment of an external id: the runner's stage and what was learnt of it."""

    runner_id: RunnerId
    control_endpoint: str
    logging_endpoint: str
    artifact_endpoint: str
    provision_endpoint: str
    status_endpoint: str
    serial: int
    data_endpoint: str = ""
    state_endpoint: str = ""
    instructions: OrderedDict[str, None] = dataclasses.field(default_factory=OrderedDict)

    def issued(self, instruction_id: str) -> None:
        self.instructions[instruction_id] = None
        while len(self.instructions) > INSTRUCTION_MEMORY:
            self.instructions.popitem(last=False)


@dataclasses.dataclass
class External:
    wid: ExternalId
    state: ExternalState = ExternalState.DISCONNECTED
    since: float = 0.0
    stage: Stage | None = None
    stages_served: int = 0
    last_error: str = ""
    waiting_since: float = 0.0

    def move(self, to: ExternalState, now: float) -> None:
        if to not in _LEGAL[self.state]:
            raise IllegalTransition(f"external worker {self.wid}", self.state, to)
        self.state = to
        self.since = now


class ExternalCore:
    """The external ids, their states and their stages. Not thread-safe: the shell locks."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.workers: dict[ExternalId, External] = {
            ExternalId(w): External(ExternalId(w)) for w in ids}
        self.draining = False
        self._serial = 0

    # -- identification -------------------------------------------------------

    def known(self, header: str | None, service: str) -> External:
        """The worker a header names; INVALID_ARGUMENT if absent, PERMISSION_DENIED if unknown."""
        if not header:
            raise ProxyError(f"{service}: missing 'worker_id' metadata header", "INVALID_ARGUMENT")
        worker = self.workers.get(ExternalId(header))
        if worker is None:
            raise ProxyError(
                f"{service}: worker id '{header}' is not configured as an external worker "
                f"(--external-worker-ids {','.join(self.workers)})", "PERMISSION_DENIED")
        return worker

    # -- provisioning and assignment -------------------------------------------

    def hold(self, header: str | None, now: float) -> Stage | None:
        """GetProvisionInfo arrived: the stage to answer with now, or None to hold the call."""
        worker = self.known(header, "GetProvisionInfo")
        if worker.stage is not None:
            return worker.stage  # mid-stage re-read: answer at once
        if worker.state is ExternalState.WAITING:
            raise ProxyError(f"GetProvisionInfo: worker id '{worker.wid}' already has a "
                             f"provision call waiting here; refusing a second one",
                             "ALREADY_EXISTS")
        if self.draining:
            raise ProxyError(f"GetProvisionInfo: sidecar is shutting down; worker "
                             f"'{worker.wid}' gets no stage here", "UNAVAILABLE")
        worker.move(ExternalState.WAITING, now)
        worker.waiting_since = now
        return None

    def unhold(self, wid: ExternalId, now: float) -> None:
        """A held GetProvisionInfo ended (deadline, caller gone) before any assignment."""
        worker = self.workers[wid]
        if worker.state is ExternalState.WAITING:
            worker.move(ExternalState.DISCONNECTED, now)

    def claim(self, runner_id: RunnerId, endpoints: dict[str, str], now: float
              ) -> External | None:
        """StartWorker: the longest-waiting WAITING id gets the stage; None if none waits."""
        if self.draining:
            raise ProxyError(f"stage {runner_id}: sidecar is shutting down", "UNAVAILABLE")
        if self.holder_of(runner_id) is not None:
            raise ProxyError(f"stage {runner_id}: runner worker id is already served by "
                             f"external worker '{self.holder_of(runner_id).wid}'",  # type: ignore[union-attr]
                             "ALREADY_EXISTS")
        waiting = [w for w in self.workers.values() if w.state is ExternalState.WAITING]
        if not waiting:
            return None
        worker = min(waiting, key=lambda w: w.waiting_since)
        self._serial += 1
        worker.stage = Stage(
            runner_id=runner_id, serial=self._serial,
            control_endpoint=endpoints.get("control_endpoint", ""),
            logging_endpoint=endpoints.get("logging_endpoint", ""),
            artifact_endpoint=endpoints.get("artifact_endpoint", ""),
            provision_endpoint=endpoints.get("provision_endpoint", ""),
            status_endpoint=endpoints.get("status_endpoint", ""))
        worker.move(ExternalState.ASSIGNED, now)
        return worker

    def connect_control(self, header: str | None, now: float) -> External:
        """The harness opened its control stream: ASSIGNED -> BUSY, or a refusal."""
        worker = self.known(header, "Control")
        if worker.state is ExternalState.BUSY:
            raise ProxyError(f"Control: worker id '{worker.wid}' already has a live control "
                             f"stream (stage {worker.stage.runner_id}); refusing a second "  # type: ignore[union-attr]
                             f"connection claiming the same id", "ALREADY_EXISTS")
        if worker.state is not ExternalState.ASSIGNED:
            raise ProxyError(f"Control: worker id '{worker.wid}' has no stage assigned "
                             f"(state {worker.state}); its boot must call GetProvisionInfo "
                             f"on this address first", "FAILED_PRECONDITION")
        worker.move(ExternalState.BUSY, now)
        return worker

    def end(self, wid: ExternalId, serial: int, now: float, error: str = "") -> Stage | None:
        """The stage ``serial`` of ``wid`` ended; returns it, or None if it had already ended."""
        worker = self.workers[wid]
        stage = worker.stage
        if stage is None or stage.serial != serial:
            return None
        worker.stage = None
        worker.last_error = error
        worker.stages_served += worker.state is ExternalState.BUSY
        worker.move(ExternalState.DISCONNECTED, now)
        return stage

    def holder_of(self, runner_id: str) -> External | None:
        for worker in self.workers.values():
            if worker.stage is not None and worker.stage.runner_id == runner_id:
                return worker
        return None

    def live(self) -> list[External]:
        return [w for w in self.workers.values() if w.stage is not None]

    def count(self, state: ExternalState) -> int:
        return sum(1 for w in self.workers.values() if w.state is state)

    def summary(self) -> str:
        return ", ".join(f"{w.wid} ({w.state})" for w in self.workers.values())

    # -- routing ----------------------------------------------------------------

    def route_header(self, header: str | None) -> External | None:
        """Rules 1 and 2 of the module docstring; None when the header does not decide."""
        if not header:
            return None
        worker = self.workers.get(ExternalId(header))
        if worker is not None and worker.stage is not None:
            return worker
        return self.holder_of(header)

    def route_instruction(self, instruction_id: str, service: str) -> External:
        """Rules 3 and 4 of the module docstring."""
        if not instruction_id:
            raise ProxyError(f"{service}: stream has no usable worker_id header and its first "
                             f"message names no instruction id", "INVALID_ARGUMENT")
        candidates = [w for w in self.live() if instruction_id in w.stage.instructions]  # type: ignore[union-attr]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise ProxyError(f"{service}: no live stage issued instruction '{instruction_id}' "
                             f"and the stream's worker_id header names none", "NOT_FOUND")
        names = ", ".join(f"{w.wid} (stage {w.stage.runner_id})" for w in candidates)  # type: ignore[union-attr]
        raise ProxyError(f"{service}: instruction '{instruction_id}' is in flight on several "
                         f"stages ({names}) and the stream's worker_id header names none; "
                         f"set WORKER_ID in the harness's environment", "FAILED_PRECONDITION")
