"""The scheduler's shell: observe, decide (pure core), persist, act. One thread.

Loop invariant: the state returned by ``core.decide`` is saved *before* its
effect runs, and an effect's result is fed back as an event. After a crash the
runner loads the state and re-issues the current phase's effect
(``core.effect_for``); effects are idempotent, so nothing is done twice.

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

from harness_pool._errors import HarnessPoolError, PermanentError, TemporaryError
from harness_pool.scheduler import core
from harness_pool.scheduler.backends.base import JobBackend
from harness_pool.scheduler.config import CycleConfig
from harness_pool.scheduler.metrics import SchedulerMetrics
from harness_pool.scheduler.model import (
    Accepted,
    CycleState,
    CycleStatus,
    Decision,
    Disposed,
    Duplicate,
    Effect,
    Event,
    Failed,
    Found,
    JobState,
    SavepointDone,
    SavepointFailed,
    SavepointPending,
    Slots,
    Submitted,
    Tick,
)
from harness_pool.scheduler.store import StateStore

log = logging.getLogger(__name__)
KILL_ENV = "HARNESS_POOL_SCHEDULER_KILL_AT"


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


class Leader(Protocol):
    def is_leader(self, now: float) -> bool: ...


class CycleRunner:
    def __init__(self, cfg: CycleConfig, backend: JobBackend, store: StateStore,
                 clock: Clock | None = None, metrics: SchedulerMetrics | None = None,
                 leader: Leader | None = None, kill_at: str | None = None) -> None:
        self.cfg = cfg
        self.backend = backend
        self.store = store
        self.clock = clock or SystemClock()
        self.metrics = metrics or SchedulerMetrics()
        self.leader = leader
        self.kill_at = kill_at if kill_at is not None else os.environ.get(KILL_ENV, "")
        self._saved: dict[str, object] | None = None
        self._step_clock: tuple[int, str, float] | None = None
        self._idle_logged = False

    # -- entry points ----------------------------------------------------------------

    def state(self) -> CycleState:
        return self.store.load() or CycleState()

    def run_once(self) -> CycleState:
        """Finish the cycle in progress, or run one cycle now; return the final state."""
        state = self.state()
        if state.status is CycleStatus.IDLE:
            state = self._apply(core.start_cycle(self.cfg, state, self.clock.now()))
        else:
            log.info("cycle %s in progress (step %d, %s); resuming it", state.cycle_id,
                     state.step_index, state.phase.value)
        return self._drive(state)

    def run_forever(self, stop: threading.Event) -> None:
        """Wait for the schedule and run cycles until ``stop`` is set."""
        while not stop.is_set():
            self.metrics.beat()
            now = self.clock.now()
            if self.leader and not self.leader.is_leader(now):
                self.clock.sleep(2.0)
                continue
            state = self.state()
            if state.status is not CycleStatus.IDLE:
                self.run_once()
                continue
            last = state.cycles[-1].started_at if state.cycles else None
            due = core.next_due(self.cfg, last, now)
            if due is None:
                if not self._idle_logged:
                    log.info("no schedule: cycles run on demand only (scheduler once)")
                    self._idle_logged = True
                stop.wait(30.0)  # wake up to beat: /healthz stays green while idle
                continue
            if due > now:
                log.info("next cycle of %s due in %.0f s", self.cfg.name, due - now)
                self.clock.sleep(min(due - now, 30.0))
                continue
            self.run_once()

    # -- the loop ----------------------------------------------------------------------

    def _drive(self, state: CycleState) -> CycleState:
        effect = core.effect_for(self.cfg, state, self.clock.now())
        while state.status is not CycleStatus.IDLE:
            self.metrics.beat()
            stop = getattr(self.clock, "stop", None)
            if stop is not None and stop.is_set():
                log.warning("stopping with cycle %s at step %d (%s); the state is saved and "
                            "the next start resumes it", state.cycle_id, state.step_index,
                            state.phase.value)
                return state
            if self.leader and not self.leader.is_leader(self.clock.now()):
                raise PermanentError("lost the lease; another replica acts now")
            if effect.delay:
                self.clock.sleep(effect.delay)
            point = f"{effect.kind}@{state.status.value.lower()}:{state.step_index}"
            self._maybe_die(f"before-{point}")
            event = self._execute(effect)
            self._maybe_die(f"after-{point}")
            state = self._apply(core.decide(self.cfg, state, event, self.clock.now()))
            effect = core.effect_for(self.cfg, state, self.clock.now())
        return state

    def _apply(self, decision: Decision) -> CycleState:
        new = decision.state
        if decision.note:
            level = logging.WARNING if "fail" in decision.note.lower() else logging.INFO
            if any(w in decision.note for w in ("LEFT STOPPED", "NOT RUNNING", "NO SAVEPOINT")):
                level = logging.CRITICAL
            log.log(level, "%s", decision.note, extra={"cycle_id": new.cycle_id})
        self._observe_metrics(new)
        data = new.to_dict()
        data.pop("polls")
        if data != self._saved:
            self.store.save(new)
            self._saved = data
        return new

    def _observe_metrics(self, new: CycleState) -> None:
        now = self.clock.now()
        key = (new.step_index, new.status.value)
        if self._step_clock and self._step_clock[:2] != key and new.status is not \
                CycleStatus.IDLE:
            index = self._step_clock[0]
            if index < len(self.cfg.steps):
                step = self.cfg.steps[index]
                self.metrics.step_seconds.labels(self.cfg.name, step.action.value,
                                                 step.job).observe(now - self._step_clock[2])
        if not self._step_clock or self._step_clock[:2] != key:
            self._step_clock = (*key, now)
        if new.status is CycleStatus.IDLE and new.cycles:
            last = new.cycles[-1]
            result = "ok" if last.ok else "failed"
            if last.ended_at == now or self._step_clock[1] != "IDLE":
                self.metrics.cycle_seconds.labels(self.cfg.name, result).observe(
                    last.ended_at - last.started_at)
                self.metrics.cycles.labels(self.cfg.name, result).inc()
                for job, seconds in last.downtime.items():
                    self.metrics.downtime_seconds.labels(job).set(seconds)

    def _maybe_die(self, point: str) -> None:
        if self.kill_at and point == self.kill_at:
            log.warning("kill point %s reached: SIGKILL to myself", point)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    def _execute(self, effect: Effect) -> Event:
        job = self.cfg.jobs.get(effect.job)
        b = self.backend
        try:
            kind = effect.kind
            if kind == "sleep":
                return Tick()
            if kind == "slots":
                return Slots(b.free_slots())
            if kind == "dispose":
                return self._dispose(effect.paths)
            assert job is not None, f"effect {kind} without a job"
            if kind == "find":
                return Found(tuple(b.find_running(job)))
            if kind in ("stop", "savepoint"):
                started = self.clock.now()
                if kind == "stop":
                    b.stop_with_savepoint(job, effect.job_id, effect.trigger_id,
                                          self.cfg.savepoints.dir)
                else:
                    b.trigger_savepoint(job, effect.job_id, effect.trigger_id,
                                        self.cfg.savepoints.dir)
                self._savepoint_started = getattr(self, "_savepoint_started", {})
                self._savepoint_started[effect.trigger_id] = started
                return Accepted()
            if kind == "poll-savepoint":
                result = b.savepoint_status(job, effect.job_id, effect.trigger_id)
                return self._savepoint_event(effect, result.status, result.location, result.error)
            if kind == "submit":
                sub = b.submit(job, effect.job_id, effect.savepoint or None, effect.parallelism)
                return Duplicate(sub.duplicates) if sub.duplicates else Submitted(sub.job_id)
            if kind == "poll-job":
                return JobState(b.job_state(job, effect.job_id))
            if kind == "cancel":
                b.cancel(job, effect.job_id)
                return Accepted()
        except TemporaryError as exc:
            log.warning("%s %s: %s", effect.kind, effect.job, exc)
            return Failed(str(exc), temporary=True)
        except HarnessPoolError as exc:
            return Failed(str(exc), temporary=False)
        raise AssertionError(f"unknown effect {effect.kind}")

    def _savepoint_event(self, effect: Effect, status: str, location: str, error: str) -> Event:
        started = getattr(self, "_savepoint_started", {}).get(effect.trigger_id)
        if status == "IN_PROGRESS":
            return SavepointPending()
        if status == "COMPLETED":
            if started is not None:
                self.metrics.savepoint_seconds.labels(effect.job).observe(
                    self.clock.now() - started)
            return SavepointDone(location)
        self.metrics.savepoint_failures.labels(effect.job).inc()
        return SavepointFailed(error)

    def _dispose(self, paths: tuple[str, ...]) -> Event:
        done, failed = [], []
        for path in paths:
            try:
                self.backend.dispose(path)
                done.append(path)
                log.info("disposed of old savepoint %s (retention keeps %d per job)", path,
                         self.cfg.savepoints.keep)
            except HarnessPoolError as exc:
                failed.append(path)
                log.warning("could not dispose of %s: %s; will retry next cycle", path, exc)
        return Disposed(tuple(done), tuple(failed))
