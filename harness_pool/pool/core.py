"""The pool's pure core: which worker gets which stage, and when to spawn.

No sockets, processes, threads or clocks here: every method takes ``now`` and
returns a decision or raises. The sidecar's shells (gRPC servicers, the
process supervisor) hold one lock around every call into a ``PoolCore`` and
act on what it returns outside that lock.

Invariants:
- a pool worker id is used by one process for its whole life, never reused;
- a worker serves at most one assignment (one process per assignment);
- a runner worker id is held by at most one live assignment;
- ``target_idle`` warm-or-warming workers are kept, so a burst of that many
  StartWorker calls finds warm workers; replacements start at assignment
  time, not at exit;
- when workers die before ever getting warm, spawning backs off
  exponentially (a crash loop must not burn the CPU the TaskManager needs);
- a worker attaches only with the secret issued for its spawn: knowing (or
  guessing) a pool id is not enough to take its place;
- a job's own interpreter (issue 9): workers of interpreter X are spawned on
  demand, one per StartWorker waiting for X and not yet covered by an idle or
  starting X worker (``demand``), serve only stages for X, never count towards
  the warm reserve, and their deaths never back off the pool's own spawning;
- seats: a worker holding a stage (assigned or busy) occupies one *seat*, the
  lowest free index at its claim, kept until it is stopped or exits. Seats
  0..target_idle-1 are the TaskManager's slots when ``--workers`` matches the
  slot count; a seat >= target_idle is taken only while more stages than that
  run at once. Metrics label per-worker usage by seat (stable across worker
  replacements and runner restarts), never by worker id.
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
from collections import deque
from typing import NewType

from harness_pool._errors import HarnessPoolError, IllegalTransition

PoolId = NewType("PoolId", str)
RunnerWorkerId = NewType("RunnerWorkerId", str)


class WorkerState(enum.Enum):
    SPAWNING = "spawning"  # process started, not attached to the sidecar yet (importing Beam)
    IDLE = "idle"  # attached and warm: waiting for an assignment
    ASSIGNED = "assigned"  # assignment sent; waiting for its control channel to the runner
    BUSY = "busy"  # SDK harness connected to the runner, serving the stage
    STOPPING = "stopping"  # asked to end (StopWorker, recycle, shutdown, start failure)
    EXITED = "exited"  # process gone; kept a while for status

    def __str__(self) -> str:
        return self.value


_LEGAL: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.SPAWNING: frozenset({WorkerState.IDLE, WorkerState.STOPPING, WorkerState.EXITED}),
    WorkerState.IDLE: frozenset({WorkerState.ASSIGNED, WorkerState.STOPPING, WorkerState.EXITED}),
    WorkerState.ASSIGNED: frozenset({WorkerState.BUSY, WorkerState.STOPPING, WorkerState.EXITED}),
    WorkerState.BUSY: frozenset({WorkerState.STOPPING, WorkerState.EXITED}),
    WorkerState.STOPPING: frozenset({WorkerState.EXITED}),
    WorkerState.EXITED: frozenset(),
}

#: States in which a worker counts towards the warm reserve.
_WARMING_OR_WARM = (WorkerState.SPAWNING, WorkerState.IDLE)
#: States in which a worker holds (or is about to hold) a runner's stage.
_HOLDING = (WorkerState.ASSIGNED, WorkerState.BUSY)


class PoolError(HarnessPoolError):
    """A request the pool cannot honour; ``code`` names the gRPC status it maps to."""

    code = "FAILED_PRECONDITION"


class UnknownWorker(PoolError):
    code = "PERMISSION_DENIED"


class DuplicateWorker(PoolError):
    code = "ALREADY_EXISTS"


class NoSuchWorker(PoolError):
    code = "NOT_FOUND"


@dataclasses.dataclass
class Worker:
    pool_id: PoolId
    state: WorkerState
    spawned_at: float
    state_since: float
    pid: int = 0
    runner_worker_id: RunnerWorkerId | None = None
    assigned_at: float = 0.0
    served: int = 0
    last_error: str = ""
    exit_code: int | None = None
    token: str = dataclasses.field(default="", repr=False)  # the spawn's secret
    preparing_since: float = 0.0  # when it reported preparing the job's dependencies
    interpreter: str = ""  # "" = the pool's own; else a job's (spawned on demand)
    seat: int | None = None  # the seat it occupies (or occupied) while holding a stage
    stop_reason: str = ""  # why it was asked to stop (first reason wins)
    end_reason: str = ""  # a sentence saying why it ended, once EXITED

    @property
    def seated(self) -> bool:
        """Occupies its seat now (holding a stage; a stopping worker has freed it)."""
        return self.seat is not None and self.state in _HOLDING

    def move(self, to: WorkerState, now: float) -> None:
        if to not in _LEGAL[self.state]:
            raise IllegalTransition(f"worker {self.pool_id}", self.state, to)
        self.state = to
        self.state_since = now


@dataclasses.dataclass(frozen=True)
class SpawnPlan:
    """What the supervisor should do now: spawn these ids; look again at ``recheck_at``."""

    spawn: tuple[PoolId, ...]
    recheck_at: float | None


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Restart backoff for workers that die before getting warm."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, consecutive_failures: int) -> float:
        if consecutive_failures <= 0:
            return 0.0
        return min(self.cap, self.base * 2 ** (consecutive_failures - 1))


class PoolCore:
    """Book-keeping and decisions for one sidecar's pooled workers."""

    def __init__(
        self,
        target_idle: int,
        max_processes: int,
        id_prefix: str = "worker",
        backoff: Backoff = Backoff(),
        keep_exited: int = 64,
    ) -> None:
        if target_idle < 0 or max_processes < target_idle:
            raise ValueError(
                f"target_idle={target_idle} and max_processes={max_processes}: "
                "expected 0 <= target_idle <= max_processes"
            )
        self.target_idle = target_idle
        self.max_processes = max_processes
        self.id_prefix = id_prefix
        self.backoff = backoff
        self.workers: dict[PoolId, Worker] = {}
        self.by_runner: dict[RunnerWorkerId, PoolId] = {}
        self._seq = 0
        self._crashes = 0  # consecutive deaths before warm
        self._spawn_not_before = 0.0
        self._exited: deque[PoolId] = deque()
        self._keep_exited = keep_exited
        self.draining = False
        self.demand: dict[str, int] = {}  # StartWorker calls waiting, per job interpreter

    # -- queries -------------------------------------------------------------

    def count(self, *states: WorkerState) -> int:
        return sum(1 for w in self.workers.values() if w.state in states)

    def live(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.state is not WorkerState.EXITED]

    def idle(self, interpreter: str = "") -> list[Worker]:
        return sorted(
            (w for w in self.workers.values()
             if w.state is WorkerState.IDLE and w.interpreter == interpreter),
            key=lambda w: w.state_since,
        )

    def count_for(self, interpreter: str, *states: WorkerState) -> int:
        return sum(1 for w in self.workers.values()
                   if w.state in states and w.interpreter == interpreter)

    def holder_of(self, runner_id: RunnerWorkerId) -> Worker | None:
        pool_id = self.by_runner.get(runner_id)
        return self.workers.get(pool_id) if pool_id else None

    def can_serve(self) -> bool:
        """Readiness: a warm worker can take a stage now."""
        return not self.draining and self.count_for("", WorkerState.IDLE) > 0

    def summary(self) -> str:
        return (
            f"{self.count(WorkerState.IDLE)} idle, {self.count(*_HOLDING)} busy, "
            f"{self.count(WorkerState.SPAWNING)} starting"
        )

    # -- spawning ------------------------------------------------------------

    def plan_spawns(self, now: float) -> SpawnPlan:
        """Ids to spawn now so that ``target_idle`` workers are warm or warming."""
        if self.draining:
            return SpawnPlan((), None)
        on_demand = self._plan_demand(now)
        missing = self.target_idle - self.count_for("", *_WARMING_OR_WARM)
        room = self.max_processes - len(self.live())
        n = max(0, min(missing, room))
        if n == 0:
            return SpawnPlan(on_demand, None)
        if now < self._spawn_not_before:
            return SpawnPlan(on_demand, self._spawn_not_before)
        if self._crashes:
            n = 1  # probe one at a time while crash-looping
        ids = [self._new_worker(now, "") for _ in range(n)]
        return SpawnPlan(on_demand + tuple(ids), None)

    def _new_worker(self, now: float, interpreter: str) -> PoolId:
        self._seq += 1
        pool_id = PoolId(f"{self.id_prefix}-{self._seq}")
        self.workers[pool_id] = Worker(pool_id, WorkerState.SPAWNING, now, now,
                                       interpreter=interpreter)
        return pool_id

    def _plan_demand(self, now: float) -> tuple[PoolId, ...]:
        """Workers of job interpreters for StartWorker calls not yet covered."""
        ids: list[PoolId] = []
        for interpreter, waiting in sorted(self.demand.items()):
            covered = self.count_for(interpreter, *_WARMING_OR_WARM)
            room = self.max_processes - len(self.live())
            for _ in range(max(0, min(waiting - covered, room))):
                ids.append(self._new_worker(now, interpreter))
        return tuple(ids)

    def surplus(self, interpreter: str) -> list[Worker]:
        """Idle workers of a job interpreter that no StartWorker waits for (to be stopped)."""
        if not interpreter:
            return []
        idle = self.idle(interpreter)
        return idle[:max(0, len(idle) - self.demand.get(interpreter, 0))]

    def issue(self, pool_id: PoolId, token: str) -> None:
        """Records the secret handed to the process spawned as ``pool_id``."""
        self.workers[pool_id].token = token

    def spawned(self, pool_id: PoolId, pid: int) -> None:
        self.workers[pool_id].pid = pid

    # -- worker events -------------------------------------------------------

    def attach(self, pool_id: str, pid: int, token: str, now: float) -> Worker:
        """A worker process connected to the sidecar and is warm.

        The same refusal for an unknown id and a wrong secret: an impostor learns
        nothing about which ids exist.
        """
        worker = self.workers.get(PoolId(pool_id))
        if worker is None or not worker.token or not hmac.compare_digest(
                worker.token.encode(), token.encode()):
            raise UnknownWorker(f"pool worker id '{pool_id}' was not started by this sidecar "
                                "with the secret presented")
        if worker.state is not WorkerState.SPAWNING:
            raise DuplicateWorker(
                f"pool worker id '{pool_id}' is already attached (state {worker.state})"
            )
        if worker.pid and pid and worker.pid != pid:
            raise UnknownWorker(
                f"pool worker id '{pool_id}' belongs to pid {worker.pid}, not pid {pid}"
            )
        if not worker.pid:
            worker.pid = pid  # attached before its launcher reported the pid (a fast fork)
        worker.move(WorkerState.IDLE, now)
        self._crashes = 0
        self._spawn_not_before = 0.0
        return worker

    def admissible(self, runner_id: RunnerWorkerId) -> None:
        """Raises when ``runner_id`` can get no worker however long it waits."""
        if self.draining:
            raise PoolError("the sidecar is shutting down and takes no new stages")
        if runner_id in self.by_runner:
            raise DuplicateWorker(
                f"runner worker id '{runner_id}' already has worker {self.by_runner[runner_id]}"
            )

    def claim(self, runner_id: RunnerWorkerId, now: float, interpreter: str = ""
              ) -> Worker | None:
        """Picks the longest-idle worker of ``interpreter`` for ``runner_id``; None when
        none is idle."""
        self.admissible(runner_id)
        idle = self.idle(interpreter)
        if not idle:
            return None
        worker = idle[0]
        worker.move(WorkerState.ASSIGNED, now)
        worker.seat = self.free_seat()
        worker.runner_worker_id = runner_id
        worker.assigned_at = now
        worker.served += 1
        self.by_runner[runner_id] = worker.pool_id
        return worker

    def ready(self, pool_id: PoolId, now: float) -> Worker:
        worker = self.workers[pool_id]
        worker.move(WorkerState.BUSY, now)
        return worker

    def stopping(self, pool_id: PoolId, now: float, reason: str = "", why: str = "") -> Worker:
        """The worker is being ended (idempotent); frees its seat.

        ``reason`` is an error (kept as ``last_error``); ``why`` (default: ``reason``)
        says why it is stopped, error or not (kept as ``stop_reason``).
        """
        worker = self.workers[pool_id]
        if worker.state not in (WorkerState.STOPPING, WorkerState.EXITED):
            worker.move(WorkerState.STOPPING, now)
        if reason and not worker.last_error:
            worker.last_error = reason
        why = why or reason
        if why and not worker.stop_reason:
            worker.stop_reason = why
        return worker

    def exited(self, pool_id: PoolId, code: int | None, now: float) -> Worker:
        """The process is gone; frees its runner id and updates crash backoff."""
        worker = self.workers[pool_id]
        if worker.state is WorkerState.EXITED:
            return worker
        died_cold = worker.state is WorkerState.SPAWNING and not worker.interpreter
        worker.move(WorkerState.EXITED, now)
        worker.exit_code = code
        if worker.runner_worker_id and self.by_runner.get(worker.runner_worker_id) == pool_id:
            del self.by_runner[worker.runner_worker_id]
        if died_cold and not self.draining:
            self._crashes += 1
            self._spawn_not_before = now + self.backoff.delay(self._crashes)
        self._exited.append(pool_id)
        while len(self._exited) > self._keep_exited:
            self.workers.pop(self._exited.popleft(), None)
        return worker

    def release(self, runner_id: RunnerWorkerId) -> Worker | None:
        """StopWorker: the worker holding ``runner_id`` (None if none) is to be stopped."""
        worker = self.holder_of(runner_id)
        if worker is None or worker.state in (WorkerState.STOPPING, WorkerState.EXITED):
            return None
        return worker

    @property
    def consecutive_crashes(self) -> int:
        return self._crashes

    # -- seats -----------------------------------------------------------------

    def free_seat(self) -> int:
        """The lowest seat no worker occupies now."""
        taken = {w.seat for w in self.workers.values() if w.seated}
        return next(i for i in range(len(taken) + 1) if i not in taken)

    def seats(self) -> dict[int, Worker]:
        """Occupied seats and the worker in each."""
        return {w.seat: w for w in self.workers.values() if w.seated and w.seat is not None}
