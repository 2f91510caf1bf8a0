"""The live pool: the pure ``PoolCore`` behind one condition variable, plus the
waiting that StartWorker needs and the mailboxes of attached workers.

Waiting rules (StartWorker): calls waiting for an idle worker are served in
arrival order; a call whose caller went away (cancelled, past its deadline)
stops waiting at once, and if it already holds a worker that is not yet
connected to the runner, that worker is stopped at once (replaced, never
handed to anyone else). A worker that is not connected within the start
timeout is stopped the same way.

Why things ended: every settled ``Record`` has a ``detail`` sentence naming
the stage and the cause, and every exited worker an ``end_reason`` sentence
(``harness_pool.pool.reasons``). A stage whose harness failed is checked
against its runner (``runner_lost``, injected by the sidecar): a control
endpoint that refuses connections means the runner went away, and the detail
says so instead of quoting the harness's error alone.

Seats: the core gives each worker holding a stage a seat; ``seat_hooks``
hears when a seat is taken (after the claim) and left (at Finished, at a
stop, at exit), for the per-slot usage metrics.

Threads: gRPC threads call ``assign``/``stop``/``attach``/``worker_event``;
the supervisor thread calls the ``Hooks`` methods (``plan_spawns``,
``spawned``, ``exited``); the sidecar's runner watch calls ``holding`` and
``runner_gone``. Every read or write of ``core``, ``_mailboxes`` and
``_records`` happens under ``_cond``. Lock order: ``Pool._cond`` may be held
while taking ``Supervisor._lock`` (``pid_of``), never the other way round;
signals to processes are sent after ``_cond`` is released.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable

from harness_pool._errors import clip, printable
from harness_pool.pool import reasons
from harness_pool.pool.core import (
    NoSuchWorker,
    PoolCore,
    PoolId,
    RunnerWorkerId,
    Worker,
    WorkerState,
)
from harness_pool.pool.dispatch import AssignError, Caller, Limits, Patient
from harness_pool.pool.records import (
    Held,
    NullObserver,
    NullSeatHooks,
    Observer,
    Outcome,
    Record,
    SeatHooks,
)
from harness_pool.pool.supervisor import SpawnSpec, Supervisor
from harness_pool.v1 import pool_pb2

_LOG = logging.getLogger("harness_pool.pool")


_RELEASE = object()  # mailbox sentinel: end the Attach stream without an assignment


class Pool:
    def __init__(
        self,
        core: PoolCore,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        history: int = 200,
    ) -> None:
        self.core = core
        self.observer: Observer = observer or NullObserver()
        self.clock = clock
        self.wall = wall
        self.supervisor: Supervisor | None = None
        self._cond = threading.Condition()
        self._mailboxes: dict[PoolId, queue.Queue[object]] = {}
        self._records: dict[PoolId, Record] = {}
        self._history: deque[Record] = deque(maxlen=history)
        self._queue: deque[object] = deque()  # StartWorker calls waiting, in arrival order
        # Job interpreters (issue 9): their own queues, and why their last spawn failed.
        self._queues: dict[str, deque[object]] = {}
        self._spawn_errors: dict[str, tuple[float, str]] = {}
        self.on_change: Callable[[], None] = lambda: None  # health refresh
        self.seat_hooks: SeatHooks = NullSeatHooks()
        #: Whether a runner's control endpoint is gone (refuses connections); quick.
        self.runner_lost: Callable[[str], bool] = lambda endpoint: False

    # -- supervisor hooks ------------------------------------------------------

    def plan_spawns(self) -> tuple[tuple[SpawnSpec, ...], float | None]:
        with self._cond:
            plan = self.core.plan_spawns(self.clock())
            specs = []
            for pool_id in plan.spawn:
                token = secrets.token_urlsafe(24)
                self.core.issue(pool_id, token)
                specs.append(SpawnSpec(pool_id, token, self.core.workers[pool_id].interpreter))
            summary = self.core.summary()
        for pool_id in plan.spawn:
            _LOG.info("starting worker %s to keep %d warm (%s)", pool_id,
                      self.core.target_idle, summary, extra={"pool_id": pool_id})
        if plan.spawn:
            self._changed()
        return tuple(specs), plan.recheck_at

    def spawned(self, pool_id: PoolId, pid: int) -> None:
        with self._cond:
            self.core.spawned(pool_id, pid)

    def spawn_failed(self, pool_id: PoolId, error: str) -> None:
        with self._cond:
            worker = self.core.workers.get(pool_id)
            if worker is not None:
                worker.last_error = clip(f"could not start: {error}")
        self.exited(pool_id, None)

    def exited(self, pool_id: PoolId, code: int | None) -> None:
        with self._cond:
            before = self.core.workers[pool_id].state
            worker = self.core.exited(pool_id, code, self.clock())
            if worker.interpreter and before is WorkerState.SPAWNING:
                self._spawn_errors[worker.interpreter] = (self.clock(), worker.last_error or (
                    f"its worker {pool_id} exited with code {code} before attaching"))
            box = self._mailboxes.pop(pool_id, None)
            record = self._records.pop(pool_id, None)
            if record is not None:
                record.ended_at = self.wall()
                record.end(Outcome.FAILED if code else Outcome.FINISHED,
                           reasons.stage_exited(record.runner_worker_id, pool_id, code))
            worker.end_reason = reasons.worker_ended(
                before.value, code, worker.stop_reason, record.detail if record else "",
                worker.last_error)
            self._cond.notify_all()
            crashes = self.core.consecutive_crashes
            summary = self.core.summary()
        if box is not None:
            box.put(_RELEASE)
        self.seat_hooks.unseated(pool_id)
        level = logging.INFO if (code == 0 or before is WorkerState.STOPPING) else logging.WARNING
        what = f"after serving {worker.runner_worker_id}" if worker.runner_worker_id else (
            "before getting warm" if before is WorkerState.SPAWNING else f"while {before}")
        _LOG.log(level, "worker %s (pid %d) exited with code %s %s (%s); %s%s", pool_id,
                 worker.pid, code, what, worker.end_reason, summary,
                 f"; {crashes} cold deaths in a row, backing off" if crashes else "",
                 extra={"pool_id": pool_id, "runner_worker_id": worker.runner_worker_id or ""})
        self.observer.worker_exited(pool_id, code, worker.served)
        self._changed()

    # -- worker side (Attach stream) ------------------------------------------

    def attach(self, pool_id: str, pid: int, token: str, warm_seconds: float
               ) -> queue.Queue[object]:
        with self._cond:
            self.core.attach(pool_id, pid, token, self.clock())
            box: queue.Queue[object] = queue.Queue()
            self._mailboxes[PoolId(pool_id)] = box
            self._cond.notify_all()
            summary = self.core.summary()
        _LOG.info("worker %s (pid %d) warm in %.2fs; %s", pool_id, pid, warm_seconds, summary,
                  extra={"pool_id": pool_id})
        self.observer.worker_warm(warm_seconds)
        self._changed()
        self._prune(self.core.workers[PoolId(pool_id)].interpreter)
        return box

    release_marker: object = _RELEASE
    """Put in a worker's mailbox to end its Attach stream without an assignment."""

    @staticmethod
    def is_release(item: object) -> bool:
        return item is _RELEASE

    def worker_event(self, pool_id: PoolId, event: pool_pb2.WorkerEvent) -> None:
        kind = event.WhichOneof("event")
        if kind == "finished":
            self._finished(pool_id, event.finished.error)
            return
        with self._cond:
            worker = self.core.workers.get(pool_id)
            record = self._records.get(pool_id)
            if worker is None:
                return
            if kind == "ready" and worker.state is WorkerState.ASSIGNED:
                self.core.ready(pool_id, self.clock())
                if record and record.outcome is Outcome.STARTING:
                    record.outcome = Outcome.RUNNING
            elif kind == "preparing" and worker.state is WorkerState.ASSIGNED:
                worker.preparing_since = self.clock()  # extends the start wait (assign)
            elif kind == "start_failed":
                worker.last_error = clip(event.start_failed.reason)
                if record:
                    record.end(Outcome.START_FAILED, reasons.stage_start_failed(
                        record.runner_worker_id, reasons.cause_line(worker.last_error)))
            self._cond.notify_all()
        if kind == "ready":
            self.observer.stage_prepared(event.ready.prepare)
        elif kind == "start_failed" and event.start_failed.kind == "dependencies":
            self.observer.dependencies_failed()
        self._changed()

    def _finished(self, pool_id: PoolId, error: str) -> None:
        """The worker's harness ended: the stage is settled with a sentence saying how.

        A failed harness whose runner's control endpoint refuses connections lost its
        runner (a TaskManager gone): the sentence says that first.
        """
        cause = reasons.cause_line(error)
        with self._cond:
            record = self._records.get(pool_id)
            endpoint = record.endpoint if record is not None and record.outcome.live else ""
        gone = bool(cause and endpoint and self.runner_lost(endpoint))
        with self._cond:
            if record is not None:
                rid = record.runner_worker_id
                record.end(Outcome.FAILED if cause else Outcome.FINISHED,
                           reasons.stage_failed(rid, cause, endpoint if gone else "") if cause
                           else reasons.stage_finished(rid))
            self._cond.notify_all()
        self.seat_hooks.unseated(pool_id)  # the stage's work is done: its last CPU sample
        self._changed()

    def detached(self, pool_id: PoolId) -> None:
        """The worker's Attach stream ended; its process is gone or going.

        An idle worker without its stream can never take a stage: it is stopped
        now rather than left counting as warm until its exit is seen.
        """
        with self._cond:
            worker = self.core.workers.get(pool_id)
            if worker is None or worker.state is WorkerState.EXITED:
                return
            if worker.state is WorkerState.ASSIGNED and not worker.last_error:
                worker.last_error = f"worker {pool_id} disconnected during start-up"
            idle = worker.state is WorkerState.IDLE
            self._cond.notify_all()
        if idle:
            self._end(pool_id, f"worker {pool_id} lost its attach stream while idle")

    # -- runner side (StartWorker / StopWorker) --------------------------------

    def assign(
        self,
        runner_id: RunnerWorkerId,
        assignment: pool_pb2.Assignment,
        limits: Limits,
        caller: Caller | None = None,
    ) -> tuple[Worker, float]:
        """Gives ``runner_id`` a warm worker and waits until it is connected to the runner.

        Returns the worker and the seconds from call to ready; raises
        ``AssignError`` (or ``PoolError``) with a message for the runner. Follows
        the waiting rules of the module docstring.
        """
        caller = caller or Patient()
        caller.on_end(self._wake_all)
        t0 = self.clock()
        interpreter = assignment.interpreter
        if interpreter and self.supervisor:
            self.supervisor.wake()  # its worker is spawned on demand
        try:
            with self._cond:
                # A job interpreter's first stage also waits for its fork server to start.
                worker = self._claim(runner_id, t0, limits.assign_timeout + (
                    limits.start_timeout if interpreter else 0.0), caller, interpreter)
        except BaseException:
            self._prune(interpreter)  # a worker spawned for this call may now be idle
            raise
        with self._cond:
            waited = self.clock() - t0
            record = Record(worker.pool_id, runner_id, worker.pid, self.wall(),
                            endpoint=assignment.control_endpoint)
            self._records[worker.pool_id] = record
            self._history.appendleft(record)
            box = self._mailboxes.get(worker.pool_id)
            if box is not None:  # else it died since the claim: the wait below says so
                box.put(assignment)
            summary = self.core.summary()
        _LOG.info("worker %s assigned to stage %s (slot %s); %s", worker.pool_id, runner_id,
                  worker.seat, summary,
                  extra={"pool_id": worker.pool_id, "runner_worker_id": runner_id})
        if worker.seat is not None:
            self.seat_hooks.seated(worker.pool_id, worker.seat, worker.pid)
        self._changed()
        if self.supervisor:
            self.supervisor.wake()  # start the replacement now, not when this one exits
        with self._cond:
            deadline = self.clock() + limits.start_timeout
            while (worker.state is WorkerState.ASSIGNED and not worker.last_error
                   and caller.active()):
                if worker.preparing_since:  # dependencies: prepare budget, then start
                    deadline = max(deadline, worker.preparing_since + limits.prepare_timeout
                                   + limits.start_timeout)
                remaining = deadline - self.clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            state, error = worker.state, worker.last_error
            ready_after = self.clock() - t0
            if state is WorkerState.BUSY:
                record.time_to_ready = ready_after
        if state is WorkerState.BUSY:
            self.observer.assigned(waited, ready_after)
            self._changed()
            return worker, ready_after
        outcome = Outcome.START_FAILED
        left = caller.remaining()
        gave_up = not caller.active() or (left is not None and left <= 0.1)
        if state is WorkerState.ASSIGNED and not error and gave_up:
            outcome, reason, message = Outcome.CANCELLED, "cancelled", (
                f"StartWorker was cancelled by its caller (or passed its deadline) before "
                f"worker {worker.pool_id} was connected; the worker is stopped")
        elif state is WorkerState.ASSIGNED and not error and worker.preparing_since:
            reason, message = "prepare_timeout", (
                f"worker {worker.pool_id} did not finish preparing the job's dependencies "
                f"and connect to the runner within {limits.prepare_timeout:g}s "
                f"(--prepare-timeout) + {limits.start_timeout:g}s (--start-timeout)")
        elif state is WorkerState.ASSIGNED and not error:
            reason, message = "start_timeout", (
                f"worker {worker.pool_id} did not connect to the runner's control endpoint "
                f"{assignment.control_endpoint or '(from provision info)'} "
                f"within {limits.start_timeout:g}s"
            )
        elif state is WorkerState.EXITED:
            reason, message = "worker_died", (
                f"worker {worker.pool_id} died during start-up (exit code {worker.exit_code})"
                + (f": {error}" if error else ""))
        else:
            reason, message = "start_failed", f"worker {worker.pool_id} failed to start: {error}"
        with self._cond:
            record.end(outcome, f"stage {runner_id}: {message}")
        self._end(worker.pool_id, message)
        self.observer.start_error(reason)
        raise AssignError(clip(f"stage {runner_id}: {message}"), reason)

    def _claim(self, runner_id: RunnerWorkerId, t0: float, timeout: float, caller: Caller,
               interpreter: str = "") -> Worker:
        """The next idle worker, first come first served (called under ``_cond``)."""
        ticket = object()
        queue_ = self._queue if not interpreter else self._queues.setdefault(interpreter, deque())
        queue_.append(ticket)
        if interpreter:
            self.core.demand[interpreter] = len(queue_)
            if self.supervisor:
                self.supervisor.wake()
        try:
            deadline = t0 + timeout
            while True:
                self.core.admissible(runner_id)
                if not caller.active():
                    self.observer.start_error("cancelled")
                    raise AssignError(f"stage {runner_id}: StartWorker was cancelled by its "
                                      "caller while waiting for an idle worker", "cancelled")
                if queue_[0] is ticket:
                    worker = self.core.claim(runner_id, self.clock(), interpreter)
                    if worker is not None:
                        return worker
                failed = self._spawn_errors.get(interpreter) if interpreter else None
                if failed is not None and failed[0] >= t0:
                    self.observer.start_error("interpreter_failed")
                    raise AssignError(clip(
                        f"stage {runner_id}: no worker could be started in the job's "
                        f"interpreter {printable(interpreter)}: {failed[1]}"),
                        "interpreter_failed")
                remaining = deadline - self.clock()
                if remaining <= 0:
                    self.observer.start_error("no_idle_worker")
                    raise AssignError(
                        f"stage {runner_id}: no idle worker within {timeout:g}s "
                        f"({self.core.summary()}, {len(self._queue) - 1} other calls "
                        "waiting); raise --workers or --assign-timeout",
                        "no_idle_worker",
                    )
                self._cond.wait(remaining)
        finally:
            queue_.remove(ticket)
            if interpreter:
                self.core.demand[interpreter] = len(queue_)
                if not queue_:
                    del self._queues[interpreter], self.core.demand[interpreter]
            self._cond.notify_all()

    def _prune(self, interpreter: str) -> None:
        """Stops idle workers of a job interpreter that no StartWorker waits for any more
        (their caller gave up): they would keep that interpreter's fork server busy."""
        if not interpreter:
            return
        with self._cond:
            surplus = [w.pool_id for w in self.core.surplus(interpreter)]
        for pool_id in surplus:
            self._end(pool_id, f"no stage waits for a worker of {interpreter} any more")

    def admissible(self, runner_id: RunnerWorkerId) -> None:
        with self._cond:
            self.core.admissible(runner_id)

    def _wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def stop(self, runner_id: RunnerWorkerId) -> bool:
        """StopWorker: ends the process serving ``runner_id``; False if none does."""
        with self._cond:
            worker = self.core.release(runner_id)
            record = self._records.get(worker.pool_id) if worker else None
            if record is not None:
                record.end(Outcome.STOPPED, reasons.stage_stopped(runner_id))
        if worker is None:
            return False
        _LOG.info("StopWorker for stage %s: stopping worker %s", runner_id, worker.pool_id,
                  extra={"pool_id": worker.pool_id, "runner_worker_id": runner_id})
        self._end(worker.pool_id, "", why=f"the runner sent StopWorker for stage {runner_id}")
        return True

    def recycle(self, pool_id: str) -> None:
        with self._cond:
            worker = self.core.workers.get(PoolId(pool_id))
            if worker is None or worker.state is WorkerState.EXITED:
                raise NoSuchWorker(f"no live worker with pool id '{printable(pool_id)}'")
            record = self._records.get(PoolId(pool_id))
            if record is not None:
                record.end(Outcome.STOPPED,
                           reasons.stage_recycled(record.runner_worker_id, pool_id))
        self._end(PoolId(pool_id), "recycled by an operator")

    def holding(self) -> list[Held]:
        """Workers holding a stage (assigned or busy), with their runner's control endpoint."""
        with self._cond:
            return [Held(w.pool_id, w.runner_worker_id or "", self._records[w.pool_id].endpoint)
                    for w in self.core.workers.values()
                    if w.state in (WorkerState.ASSIGNED, WorkerState.BUSY)
                    and w.pool_id in self._records and self._records[w.pool_id].endpoint]

    def runner_gone(self, pool_id: PoolId, endpoint: str, seconds: float) -> bool:
        """The runner of the stage ``pool_id`` serves is gone (its control endpoint has
        refused connections for ``seconds``): the stage fails with a sentence saying so,
        and the worker is stopped (a replacement warms as usual). False if it no longer
        holds that stage."""
        with self._cond:
            worker = self.core.workers.get(pool_id)
            record = self._records.get(pool_id)
            if (worker is None or record is None or record.endpoint != endpoint
                    or worker.state not in (WorkerState.ASSIGNED, WorkerState.BUSY)):
                return False
            sentence = reasons.runner_lost(record.runner_worker_id, endpoint, seconds, pool_id)
            record.end(Outcome.FAILED, sentence)
            summary = self.core.summary()
        _LOG.warning("%s; %s", sentence, summary,
                     extra={"pool_id": pool_id, "runner_worker_id": record.runner_worker_id})
        self._end(pool_id, sentence)
        return True

    def _end(self, pool_id: PoolId, reason: str, why: str = "") -> None:
        with self._cond:
            worker = self.core.workers.get(pool_id)
            if worker is None or worker.state is WorkerState.EXITED:
                return
            self.core.stopping(pool_id, self.clock(), reason, why)
            box = self._mailboxes.get(pool_id)
            self._cond.notify_all()
        self.seat_hooks.unseated(pool_id)  # before the signal: its last CPU sample
        if box is not None:
            box.put(_RELEASE)
        if self.supervisor:
            self.supervisor.request_stop(pool_id)
        self._changed()

    # -- shutdown, status ------------------------------------------------------

    def drain(self) -> None:
        """No new assignments; waiting StartWorker calls fail now; idle workers are released."""
        with self._cond:
            self.core.draining = True
            idle = [w.pool_id for w in self.core.workers.values()
                    if w.state in (WorkerState.IDLE, WorkerState.SPAWNING)]
            self._cond.notify_all()
        for pool_id in idle:
            self._end(pool_id, "sidecar shutting down")

    def stop_all(self, why: str) -> None:
        """Shutdown, after the drain: every live worker is stopped, and every stage still
        running ends as stopped, for ``why``."""
        with self._cond:
            ids = [w.pool_id for w in self.core.live()]
            for pool_id in ids:
                record = self._records.get(pool_id)
                if record is not None:
                    record.end(Outcome.STOPPED, f"stage {record.runner_worker_id} stopped: {why}")
        for pool_id in ids:
            self._end(pool_id, "", why=why)

    def wait_until_no_stage(self, timeout: float) -> bool:
        """Waits for running stages to end; True when none is left."""
        deadline = self.clock() + timeout
        with self._cond:
            while self.core.count(WorkerState.ASSIGNED, WorkerState.BUSY):
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def can_serve(self) -> bool:
        with self._cond:
            return self.core.can_serve()

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {s.value: self.core.count(s) for s in WorkerState if s is not WorkerState.EXITED}

    def snapshot(self) -> tuple[list[pool_pb2.WorkerStatus], list[pool_pb2.AssignmentRecord]]:
        now = self.clock()
        with self._cond:
            workers = [
                pool_pb2.WorkerStatus(
                    pool_id=w.pool_id, kind="pooled", state=w.state.value,
                    runner_worker_id=w.runner_worker_id or "", pid=w.pid,
                    uptime_seconds=now - w.spawned_at, assignments_served=w.served,
                    seconds_in_state=now - w.state_since,
                    connected=w.state in (WorkerState.IDLE, WorkerState.ASSIGNED, WorkerState.BUSY),
                    last_error=clip(w.last_error), end_reason=w.end_reason, slot=w.seat,
                )
                for w in sorted(self.core.workers.values(), key=lambda w: w.spawned_at)
            ]
            history = [r.to_proto() for r in self._history]
        return workers, history

    def _changed(self) -> None:
        self.observer.pool_changed(self.counts())
        self.on_change()
