"""Who serves a stage: the seam between the runner-facing service and the workers.

``Dispatcher`` is implemented by the pooled workers (``PooledDispatcher``) and,
in fixed-endpoint mode, by ``harness_pool.proxy``'s external workers in front
of them. ``Caller`` is the runner's StartWorker call as a wait sees it: every
wait on its behalf ends when the caller goes away or its deadline passes.

No gRPC here (``harness_pool._grpc.GrpcCaller`` adapts a servicer context).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from harness_pool.pool.core import PoolError, RunnerWorkerId
from harness_pool.v1 import pool_pb2

if TYPE_CHECKING:
    from harness_pool.pool.pool import Pool


class AssignError(PoolError):
    """StartWorker could not be honoured; ``reason`` is a short label for metrics."""

    code = "UNAVAILABLE"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Caller(Protocol):
    """The StartWorker call a wait is for."""

    def active(self) -> bool:
        """False once the caller cancelled or its deadline passed."""
        ...

    def remaining(self) -> float | None:
        """Seconds to the caller's deadline; None when it set none."""
        ...

    def on_end(self, callback: Callable[[], None]) -> None:
        """Runs ``callback`` when the call ends for any reason (wakes waits at once)."""
        ...


class Patient:
    """A caller that never leaves and has no deadline (tests, benchmarks)."""

    def active(self) -> bool:
        return True

    def remaining(self) -> float | None:
        return None

    def on_end(self, callback: Callable[[], None]) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class Limits:
    """How long a StartWorker may wait: for an idle worker, then for it to be connected."""

    assign_timeout: float
    start_timeout: float
    prepare_timeout: float = 0.0
    """Extra time for a worker that reported it is preparing the job's dependencies
    (issue 9): the start timeout then counts from the end of that budget."""

    def within(self, caller: Caller) -> Limits:
        """These limits shortened to the caller's own deadline."""
        left = caller.remaining()
        if left is None:
            return self
        return Limits(min(self.assign_timeout, max(0.0, left)),
                      min(self.start_timeout, max(0.0, left)),
                      min(self.prepare_timeout, max(0.0, left)))


class Dispatcher(Protocol):
    def check(self, runner_id: RunnerWorkerId) -> None:
        """Raises at once when ``runner_id`` can get no worker however long it waits
        (a duplicate id, a draining sidecar)."""
        ...

    def assign(self, runner_id: RunnerWorkerId, assignment: pool_pb2.Assignment,
               limits: Limits, caller: Caller) -> tuple[str, float]:
        """A worker for the stage, connected to the runner: (its id, seconds to ready).

        Raises ``AssignError`` (or another ``PoolError``) with a sentence for the runner.
        """
        ...

    def stop(self, runner_id: RunnerWorkerId) -> bool:
        """StopWorker: ends whatever serves ``runner_id``; False if nothing does."""
        ...


class PooledDispatcher:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def check(self, runner_id: RunnerWorkerId) -> None:
        self.pool.admissible(runner_id)

    def assign(self, runner_id: RunnerWorkerId, assignment: pool_pb2.Assignment,
               limits: Limits, caller: Caller) -> tuple[str, float]:
        worker, seconds = self.pool.assign(runner_id, assignment, limits, caller)
        return worker.pool_id, seconds

    def stop(self, runner_id: RunnerWorkerId) -> bool:
        return self.pool.stop(runner_id)
