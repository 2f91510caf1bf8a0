"""The end of a cycle: savepoint retention, the cycle summary, a manual request's result.

Pure, like the rest of the core. Entering FINISHING marks every COMPLETED
savepoint beyond ``keep`` per job as DISPOSING *in the persisted state*, then
asks the shell to dispose of every DISPOSING one; a restart re-issues the
same disposals (deleting twice is harmless: gone counts as done). A disposal
the backend has accepted but not finished (Ververica's PENDING_DELETION, an
operator finalizer) or could not do stays DISPOSING and is asked again at the
end of the next cycle. Never disposed: a savepoint the cycle in progress took,
or the newest of a job (``keep`` is at least 1).
"""

from __future__ import annotations

from harness_pool.scheduler.config import CycleConfig
from harness_pool.scheduler.events import (
    IDLE,
    Begin,
    Decision,
    DisposalState,
    Disposed,
    Effect,
    EffectKind,
    Event,
)
from harness_pool.scheduler.model import (
    CycleKind,
    CycleState,
    CycleStatus,
    CycleSummary,
    Phase,
    Request,
    RequestKind,
    RequestStatus,
    SavepointRecord,
    SavepointStatus,
    unreachable,
)

KEEP_CYCLES = 20
KEEP_HISTORY = 100


def enter_finishing(cfg: CycleConfig, s: CycleState, now: float, note: str) -> Decision:
    """Steps are over (done or failed): mark what retention removes, then dispose."""
    s.set_status(CycleStatus.FINISHING)
    s.phase = Phase.START
    keep = (s.plan.savepoints if s.plan else cfg.savepoints).keep
    if keep is not None and s.kind is CycleKind.SCHEDULED:
        for record in beyond_keep(s, keep):
            record.move(SavepointStatus.DISPOSING)
    return Decision(s, dispose_effect(s), note)


def beyond_keep(s: CycleState, keep: int) -> list[SavepointRecord]:
    """COMPLETED savepoints beyond the newest ``keep`` of each job, never one in use."""
    in_use = set(s.taken.values())
    by_job: dict[str, list[SavepointRecord]] = {}
    for record in s.history:
        if record.status is SavepointStatus.COMPLETED and record.job:
            by_job.setdefault(record.job, []).append(record)
    out: list[SavepointRecord] = []
    for records in by_job.values():
        records.sort(key=lambda r: r.taken_at)
        out += [r for r in records[: max(0, len(records) - keep)] if r.path not in in_use]
    return out


def dispose_effect(s: CycleState) -> Effect:
    todo = tuple((r.path, r.ref) for r in s.history if r.status is SavepointStatus.DISPOSING)
    return Effect(EffectKind.DISPOSE, disposals=todo)


def finish(cfg: CycleConfig, s: CycleState, ev: Event, now: float) -> Decision:
    if isinstance(ev, Begin):
        return Decision(s, dispose_effect(s), "applying savepoint retention")
    results = {path: (outcome, detail) for path, outcome, detail in
               (ev.results if isinstance(ev, Disposed) else ())}
    done = 0
    for record in s.history:
        outcome, _ = results.get(record.path, (None, ""))
        if record.status is SavepointStatus.DISPOSING and outcome is DisposalState.DONE:
            record.move(SavepointStatus.DISPOSED)
            done += 1
    s.history = [r for r in s.history if r.status is not SavepointStatus.DISPOSED]
    completed = [r for r in s.history if r.status is SavepointStatus.COMPLETED]
    drop = {id(r) for r in completed[: max(0, len(completed) - KEEP_HISTORY)]}
    s.history = [r for r in s.history if id(r) not in drop]
    waiting = [p for p, (o, _) in results.items() if o is not DisposalState.DONE]
    ok = not s.failure
    if s.request_id:
        ok = _finish_request(s, results, now) and ok
    s.cycles.append(CycleSummary(s.cycle_id, s.cycle_started, now, ok, s.failure,
                                 dict(s.downtime), s.kind))
    s.cycles = s.cycles[-KEEP_CYCLES:]
    s.set_status(CycleStatus.IDLE)
    s.phase, s.step_index, s.plan, s.request_id = Phase.START, 0, None, ""
    verdict = "completed" if ok else f"FAILED: {s.failure}"
    later = f"; {len(waiting)} disposal(s) not finished, asked again next cycle" \
        if waiting else ""
    return Decision(s, IDLE, f"cycle {s.cycle_id} {verdict}; disposed of {done} old "
                    f"savepoint(s){later}")


def _finish_request(s: CycleState, results: dict[str, tuple[DisposalState, str]],
                    now: float) -> bool:
    """Record the outcome of the manual request this cycle carried out."""
    req: Request | None = s.request(s.request_id)
    if req is None:
        return True
    req.finished_at = now
    if s.failure:
        req.move(RequestStatus.FAILED, s.failure)
        return False
    if req.kind is RequestKind.SAVEPOINT:
        mine = [r.path for r in s.history if r.cycle_id == s.cycle_id]
        req.move(RequestStatus.DONE, mine[-1] if mine else "")
    elif req.kind is RequestKind.RESUME:
        req.move(RequestStatus.DONE, f"{req.job} running as {s.jobs.get(req.job, '?')}")
    elif req.kind is RequestKind.DISPOSE:
        outcome, detail = results.get(req.path, (DisposalState.PENDING, ""))
        if outcome is DisposalState.FAILED:
            s.failure = f"dispose {req.path}: {detail}"
            req.move(RequestStatus.FAILED, s.failure)
            return False
        req.move(RequestStatus.DONE, "disposed" if outcome is DisposalState.DONE else
                 f"deletion accepted, still running ({detail or 'asynchronous'})")
    else:
        unreachable(req.kind)
    return True
