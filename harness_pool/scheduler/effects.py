"""Performing one effect: a backend call (or a sleep) whose outcome becomes an event.

The executor decides nothing: it calls the backend the effect names, with the
job spec and savepoint policy of the plan the cycle runs under, and turns the
answer into the matching event. Failures become ``Failed`` (``temporary``:
worth asking again): the backend's own errors as they are, anything else a
backend let through as a temporary failure logged with its traceback (a bug
must not kill the run loop mid-cycle and leave the state behind).
"""

from __future__ import annotations

import logging

from harness_pool._errors import HarnessPoolError, TemporaryError
from harness_pool.scheduler.backends.base import JobBackend
from harness_pool.scheduler.events import (
    Accepted,
    AlreadySubmitted,
    DisposalState,
    Disposed,
    Effect,
    EffectKind,
    Event,
    Failed,
    Found,
    JobState,
    Probed,
    Restored,
    SavepointDone,
    SavepointFailed,
    SavepointPending,
    SavepointState,
    Slots,
    Submitted,
    Tick,
)
from harness_pool.scheduler.model import Plan, unreachable

log = logging.getLogger(__name__)


class Executor:
    def __init__(self, backend: JobBackend) -> None:
        self.backend = backend

    def run(self, effect: Effect, plan: Plan) -> Event:
        try:
            return self._run(effect, plan)
        except TemporaryError as exc:
            log.warning("%s %s: %s", effect.kind.value, effect.job or "", exc)
            return Failed(str(exc), temporary=True)
        except HarnessPoolError as exc:
            return Failed(str(exc), temporary=False)
        except Exception as exc:  # a backend bug: keep the loop and the state alive
            log.exception("%s %s: unexpected %s from the backend; treated as temporary",
                          effect.kind.value, effect.job or "", type(exc).__name__)
            return Failed(f"unexpected {type(exc).__name__}: {exc}", temporary=True)

    def _run(self, effect: Effect, plan: Plan) -> Event:
        kind, b = effect.kind, self.backend
        if kind is EffectKind.SLEEP:
            return Tick()
        if kind is EffectKind.IDLE:
            return Tick()
        if kind is EffectKind.SLOTS:
            return Slots(b.free_slots())
        if kind is EffectKind.DISPOSE:
            results = []
            for path, ref in effect.disposals:
                try:
                    outcome = b.dispose(path, ref)
                    results.append((path, outcome.state, outcome.detail))
                except HarnessPoolError as exc:
                    results.append((path, DisposalState.FAILED, str(exc)))
            return Disposed(tuple(results))
        job = plan.jobs.get(effect.job)
        if job is None:
            raise TemporaryError(f"{kind.value}: job {effect.job!r} is not in the cycle's plan")
        if kind is EffectKind.FIND:
            return Found(tuple(b.find_running(job)))
        if kind is EffectKind.STOP:
            b.stop_with_savepoint(job, effect.job_id, effect.trigger_id, plan.savepoints.dir)
            return Accepted()
        if kind is EffectKind.SAVEPOINT:
            b.trigger_savepoint(job, effect.job_id, effect.trigger_id, plan.savepoints.dir)
            return Accepted()
        if kind is EffectKind.POLL_SAVEPOINT:
            result = b.savepoint_status(job, effect.job_id, effect.trigger_id, effect.stop)
            if result.state is SavepointState.PENDING:
                return SavepointPending()
            if result.state is SavepointState.COMPLETED:
                return SavepointDone(result.location, result.ref)
            if result.state is SavepointState.FAILED:
                return SavepointFailed(result.error or "failed")
            unreachable(result.state)
        if kind is EffectKind.REVERT_STOP:
            b.revert_stop(job, effect.job_id, effect.trigger_id)
            return Accepted()
        if kind is EffectKind.PROBE:
            return Probed(b.job_state(job, effect.job_id),
                          tuple(i for i in b.find_running(job) if i != effect.job_id))
        if kind is EffectKind.SUBMIT:
            sub = b.submit(job, effect.job_id, effect.savepoint or None, effect.parallelism)
            return AlreadySubmitted(sub.job_id) if sub.already else Submitted(sub.job_id)
        if kind is EffectKind.POLL_JOB:
            return JobState(b.job_state(job, effect.job_id))
        if kind is EffectKind.VERIFY:
            return Restored(b.restored_from(job, effect.job_id))
        if kind is EffectKind.CANCEL:
            b.cancel(job, effect.job_id)
            return Accepted()
        unreachable(kind)
