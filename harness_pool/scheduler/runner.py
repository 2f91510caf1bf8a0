"""The scheduler's shell: observe, decide (pure core), persist, act. One thread.

Loop invariant: the state returned by ``core.decide`` is saved *before* its
effect runs, and an effect's result is fed back as an event. After a crash the
runner loads the state and feeds ``Begin``: the core re-enters the phase (a
request that may have been in flight is looked for before it is sent again).

One actor: every effect runs only while this process is the actor (it holds
the Lease, or the state file's lock); a run loop that loses the Lease stops
acting at once and waits as a follower. Manual requests
(``harness-pool savepoints ...``) arrive through the store's inbox and run,
through the same core, only between cycles.

The heartbeat (``/healthz``) beats every iteration and is held through every
sleep and backend call for its bound, so a slow step never looks stuck and a
stuck one does.

``kill_at`` (or env ``HARNESS_POOL_SCHEDULER_KILL_AT``) names a point such as
``before-stop@running:0`` or ``after-submit@running:3`` where the process
SIGKILLs itself; the crash tests use it to stop at exact step boundaries.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Protocol

from harness_pool._errors import PermanentError, TemporaryError
from harness_pool.scheduler import core
from harness_pool.scheduler.backends.base import JobBackend
from harness_pool.scheduler.config import CycleConfig
from harness_pool.scheduler.effects import Executor
from harness_pool.scheduler.events import (
    Begin,
    Decision,
    Effect,
    EffectKind,
    Event,
    SavepointDone,
    SavepointFailed,
)
from harness_pool.scheduler.leader import Actor, Always
from harness_pool.scheduler.metrics import SchedulerMetrics
from harness_pool.scheduler.model import CycleKind, CycleState, CycleStatus, RequestStatus
from harness_pool.scheduler.store import StateStore

log = logging.getLogger(__name__)
KILL_ENV = "HARNESS_POOL_SCHEDULER_KILL_AT"
INBOX_EVERY = 2.0
"""How often an idle run loop looks for manual requests."""
SAVE_PATIENCE = 300.0
"""How long a state write that fails temporarily is retried before the loop gives up
(nothing is done meanwhile: no effect runs before its intent is saved)."""


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        self.stop.wait(max(0.0, seconds))


class LostActor(PermanentError):
    """This process is no longer the one that acts (the Lease went to another replica)."""


class CycleRunner:
    def __init__(self, cfg: CycleConfig, backend: JobBackend, store: StateStore,
                 clock: Clock | None = None, metrics: SchedulerMetrics | None = None,
                 actor: Actor | None = None, kill_at: str | None = None) -> None:
        self.cfg = cfg
        self.backend = backend
        self.store = store
        self.clock = clock or SystemClock()
        self.metrics = metrics or SchedulerMetrics()
        self.actor: Actor = actor or Always()
        self.kill_at = kill_at if kill_at is not None else os.environ.get(KILL_ENV, "")
        self.executor = Executor(backend)
        self._saved: dict[str, object] | None = None
        self._step_clock: tuple[int, str, float] | None = None
        self._triggered: dict[str, float] = {}
        self._newest: dict[str, float] = {}
        self._waiting_logged = ""

    # -- entry points ----------------------------------------------------------------

    def state(self) -> CycleState:
        state = self.store.load() or CycleState()
        self._observe_savepoints(state)
        return state

    def run_once(self) -> CycleState:
        """Finish the cycle in progress, or run one scheduled cycle now; return the final state."""
        state = self.state()
        if state.status is CycleStatus.IDLE:
            return self._start(core.start_cycle(self.cfg, state, self.clock.now()), state)
        log.info("cycle %s in progress (step %d, %s); resuming it", state.cycle_id,
                 state.step_index, state.phase.value)
        return self._drive(state)

    def run_requests(self, until: str) -> CycleState:
        """Finish the cycle in progress, then run queued requests until ``until`` finished."""
        state = self.state()
        while not self._stopping():
            if state.status is not CycleStatus.IDLE:
                log.info("finishing cycle %s first (its scheduler is not running)",
                         state.cycle_id)
                state = self._drive(state)
                continue
            state = self._intake(state)
            mine = state.request(until)
            queued = core.next_request(state)
            if mine is None or mine.status in (RequestStatus.DONE, RequestStatus.FAILED) \
                    or queued is None:
                return state
            state = self._start(core.start_request(self.cfg, state, queued.id,
                                                   self.clock.now()), state)
        return state

    def run_forever(self, stop: threading.Event) -> None:
        """Act while this process is the actor: cycles on schedule, requests between them."""
        self.actor.start()
        try:
            while not stop.is_set():
                self.metrics.beat()
                leading = self.actor.leading() or self.actor.try_acquire()
                self.metrics.leader.set(1 if leading else 0)
                if not leading:
                    self._note_waiting(f"waiting: {self.actor.holder()} acts")
                    self._wait(INBOX_EVERY)
                    continue
                try:
                    self._serve_once()
                except LostActor as exc:
                    log.warning("%s; waiting as a follower", exc)
                except TemporaryError as exc:  # the state could not be read: ask again
                    log.warning("%s; trying again in %.0f s", exc, INBOX_EVERY)
                    self._wait(INBOX_EVERY)
        finally:
            self.metrics.leader.set(0)
            self.actor.release()

    def _serve_once(self) -> None:
        state = self.state()
        if state.status is not CycleStatus.IDLE:
            log.info("cycle %s in progress (step %d, %s); resuming it", state.cycle_id,
                     state.step_index, state.phase.value)
            self._drive(state)
            return
        state = self._intake(state)
        queued = core.next_request(state)
        now = self.clock.now()
        if queued is not None:
            self._start(core.start_request(self.cfg, state, queued.id, now), state)
            return
        last = state.last_scheduled()
        due = core.next_due(self.cfg, last.started_at if last else None, now)
        if due is not None and due <= now:
            self._start(core.start_cycle(self.cfg, state, now), state)
            return
        self._note_waiting("no schedule: cycles run on demand (scheduler once) or by request"
                           if due is None else f"next cycle of {self.cfg.name} due at "
                           f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(due))}")
        self._wait(INBOX_EVERY if due is None else min(due - now, INBOX_EVERY))

    def _note_waiting(self, text: str) -> None:
        if text != self._waiting_logged:
            log.info("%s", text)
            self._waiting_logged = text

    def _wait(self, seconds: float) -> None:
        with self.metrics.hold(seconds + 5.0):
            self.clock.sleep(seconds)

    # -- the loop ----------------------------------------------------------------------

    def _start(self, decision: Decision, old: CycleState) -> CycleState:
        """Run a cycle that starts now (nothing of it was sent before)."""
        return self._drive(self._apply(decision, old), decision.effect)

    def _drive(self, state: CycleState, effect: Effect | None = None) -> CycleState:
        """Run the cycle in ``state`` to its end; without ``effect``, it was loaded after a
        (re)start and the core decides how to re-enter its phase."""
        if effect is None:
            decision = core.decide(self.cfg, state, Begin(), self.clock.now())
            state = self._apply(decision, state)
            effect = decision.effect
        while state.status is not CycleStatus.IDLE:
            self.metrics.beat()
            if self._stopping():
                log.warning("stopping with cycle %s at step %d (%s); the state is saved and "
                            "the next start resumes it", state.cycle_id, state.step_index,
                            state.phase.value)
                return state
            if not self.actor.leading():
                raise LostActor(f"no longer the actor ({self.actor.holder()} is) at cycle "
                                f"{state.cycle_id} step {state.step_index}")
            event = self._perform(state, effect)
            decision = core.decide(self.cfg, state, event, self.clock.now())
            state = self._apply(decision, state)
            effect = decision.effect
        return state

    def _stopping(self) -> bool:
        stop = getattr(self.clock, "stop", None)
        return stop is not None and stop.is_set()

    def _perform(self, state: CycleState, effect: Effect) -> Event:
        point = f"{effect.kind.value}@{state.status.value.lower()}:{state.step_index}"
        self._maybe_die(f"before-{point}")
        bound = effect.delay + max(120.0, 10 * self.cfg.backend.request_timeout) + \
            60.0 * len(effect.disposals)
        with self.metrics.hold(bound):
            if effect.delay:
                self.clock.sleep(effect.delay)
            if effect.kind in (EffectKind.STOP, EffectKind.SAVEPOINT):
                self._triggered.setdefault(effect.trigger_id, self.clock.now())
            event = self.executor.run(effect, core.plan_of(self.cfg, state))
        self._maybe_die(f"after-{point}")
        self._observe_savepoint_event(effect, event)
        return event

    def _apply(self, decision: Decision, old: CycleState) -> CycleState:
        new = decision.state
        if decision.note:
            note = decision.note
            level = logging.WARNING if "fail" in note.lower() else logging.INFO
            if any(w in note for w in ("LEFT STOPPED", "NOT RUNNING", "NO SAVEPOINT", "CHECK ")):
                level = logging.CRITICAL
            log.log(level, "%s", note, extra={"cycle_id": new.cycle_id})
        data = new.to_dict()
        data.pop("polls")
        data.pop("errors")
        if data != self._saved:
            self._save(new)
            self._saved = data
        self._observe(old, new)
        return new

    def _save(self, state: CycleState) -> None:
        give_up = time.monotonic() + SAVE_PATIENCE
        delay = 0.5
        while True:
            try:
                self.store.save(state)
                return
            except TemporaryError as exc:
                if time.monotonic() >= give_up:
                    raise PermanentError(f"cannot save the scheduler state for "
                                         f"{SAVE_PATIENCE:.0f} s: {exc}") from exc
                log.warning("saving the state failed (%s); nothing is done until it is saved; "
                            "trying again in %.1f s", exc, delay)
                with self.metrics.hold(delay + 5.0):
                    self.clock.sleep(delay)
                delay = min(10.0, delay * 2)

    def _intake(self, state: CycleState) -> CycleState:
        incoming = self.store.inbox()
        if not incoming:
            return state
        new, notes = core.accept_requests(self.cfg, state, incoming, self.clock.now())
        for note in notes:
            log.info("%s", note)
        self._save(new)
        self._saved = None
        self.store.consume([r.id for r in incoming])
        for req in new.requests:
            if req.id in {r.id for r in incoming} and req.status is RequestStatus.FAILED:
                self.metrics.requests.labels(req.kind.value, "failed").inc()
        return new

    # -- metrics -----------------------------------------------------------------------

    def _observe(self, old: CycleState, new: CycleState) -> None:
        now = self.clock.now()
        key = (new.step_index, new.status.value)
        plan = core.plan_of(self.cfg, old) if old.plan else None
        if self._step_clock and self._step_clock[:2] != key and plan is not None:
            index = self._step_clock[0]
            if self._step_clock[1] == "RUNNING" and index < len(plan.steps):
                step = plan.steps[index]
                self.metrics.step_seconds.labels(self.cfg.name, step.action.value,
                                                 step.job).observe(now - self._step_clock[2])
        if not self._step_clock or self._step_clock[:2] != key:
            self._step_clock = (*key, now)
        if old.status is CycleStatus.FINISHING and new.status is CycleStatus.IDLE \
                and new.cycles:
            last = new.cycles[-1]
            result = "ok" if last.ok else "failed"
            if last.kind is CycleKind.MANUAL:
                req = next((r for r in reversed(new.requests) if r.finished_at == now), None)
                self.metrics.requests.labels(req.kind.value if req else "unknown",
                                             result).inc()
            else:
                self.metrics.cycle_seconds.labels(self.cfg.name, result).observe(
                    last.ended_at - last.started_at)
                self.metrics.cycles.labels(self.cfg.name, result).inc()
            for job, seconds in last.downtime.items():
                self.metrics.downtime_seconds.labels(job).set(seconds)
        self._observe_savepoints(new)

    def _observe_savepoints(self, state: CycleState) -> None:
        for job, record in state.newest_savepoints().items():
            if self._newest.get(job) != record.taken_at:
                self._newest[job] = record.taken_at
                self.metrics.last_savepoint.labels(job).set(record.taken_at)

    def _observe_savepoint_event(self, effect: Effect, event: Event) -> None:
        if isinstance(event, SavepointDone):
            started = self._triggered.pop(effect.trigger_id, None)
            if started is not None:
                self.metrics.savepoint_seconds.labels(effect.job).observe(
                    self.clock.now() - started)
        elif isinstance(event, SavepointFailed):
            self._triggered.pop(effect.trigger_id, None)
            self.metrics.savepoint_failures.labels(effect.job).inc()

    def _maybe_die(self, point: str) -> None:
        if self.kill_at and point == self.kill_at:
            log.warning("kill point %s reached: SIGKILL to myself", point)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
