"""The pool's pure core: table-driven, no processes, no clock."""

from __future__ import annotations

import pytest

from harness_pool._errors import IllegalTransition
from harness_pool.pool.core import (
    Backoff,
    DuplicateWorker,
    PoolCore,
    PoolError,
    PoolId,
    RunnerWorkerId,
    UnknownWorker,
    WorkerState,
)


def token(pool_id: str) -> str:
    return f"secret-of-{pool_id}"


def spawn(core: PoolCore, now: float) -> tuple[PoolId, ...]:
    ids = core.plan_spawns(now).spawn
    for pool_id in ids:
        core.issue(pool_id, token(pool_id))
    return ids


def warm_pool(n: int, cap: int | None = None) -> PoolCore:
    core = PoolCore(target_idle=n, max_processes=cap or 2 * n)
    for i, pool_id in enumerate(spawn(core, 0.0)):
        core.spawned(pool_id, 100 + i)
        core.attach(pool_id, 100 + i, token(pool_id), 1.0 + i)
    return core


def test_first_plan_spawns_target_idle_with_fresh_ids() -> None:
    core = PoolCore(target_idle=3, max_processes=6)
    assert core.plan_spawns(0.0).spawn == ("worker-1", "worker-2", "worker-3")
    assert core.plan_spawns(0.1).spawn == ()  # spawning ones count towards the reserve


def test_claim_takes_longest_idle_and_replacement_is_planned_at_once() -> None:
    core = warm_pool(2)
    worker = core.claim(RunnerWorkerId("1-1"), 5.0)
    assert worker is not None and worker.pool_id == "worker-1"
    assert worker.state is WorkerState.ASSIGNED
    assert core.plan_spawns(5.0).spawn == ("worker-3",)


@pytest.mark.parametrize(
    "target,cap,busy,expect",
    [
        pytest.param(2, 4, 0, 0, id="all-warm"),
        pytest.param(2, 4, 2, 2, id="two-busy-two-replacements"),
        pytest.param(2, 3, 2, 1, id="cap-limits-replacements"),
        pytest.param(2, 2, 2, 0, id="at-cap-nothing"),
    ],
)
def test_spawn_plan_respects_cap(target: int, cap: int, busy: int, expect: int) -> None:
    core = warm_pool(target, cap)
    for i in range(busy):
        core.claim(RunnerWorkerId(f"r{i}"), 1.0)
    assert len(core.plan_spawns(2.0).spawn) == expect


def test_no_idle_worker_means_none() -> None:
    core = warm_pool(1, 1)
    assert core.claim(RunnerWorkerId("a"), 1.0) is not None
    assert core.claim(RunnerWorkerId("b"), 1.0) is None


@pytest.mark.parametrize(
    "setup,call,error",
    [
        pytest.param(lambda c: None, lambda c: c.attach("stranger-1", 1, "x", 0.0),
                     UnknownWorker, id="unknown-pool-id"),
        pytest.param(lambda c: None, lambda c: c.attach("worker-1", 100, token("worker-1"), 0.0),
                     DuplicateWorker, id="attach-twice"),
        # a claim makes the pool spawn worker-3, which has not attached yet
        pytest.param(lambda c: (c.claim(RunnerWorkerId("y"), 0.0), spawn(c, 0.0)),
                     lambda c: c.attach("worker-3", 0, "guessed", 0.0), UnknownWorker,
                     id="impostor-with-wrong-secret"),
        pytest.param(lambda c: (c.claim(RunnerWorkerId("y"), 0.0), spawn(c, 0.0)),
                     lambda c: c.attach("worker-3", 0, "", 0.0), UnknownWorker,
                     id="impostor-without-secret"),
        pytest.param(lambda c: c.claim(RunnerWorkerId("x"), 0.0),
                     lambda c: c.claim(RunnerWorkerId("x"), 0.0), DuplicateWorker,
                     id="duplicate-runner-id"),
    ],
)
def test_refusals(setup, call, error) -> None:
    core = warm_pool(2)
    setup(core)
    with pytest.raises(error) as info:
        call(core)
    assert ("stranger-1" in str(info.value)) or ("worker-1" in str(info.value)) \
        or ("'x'" in str(info.value)) or ("worker-3" in str(info.value))


def test_attach_from_wrong_pid_is_refused() -> None:
    core = PoolCore(1, 2)
    (pool_id,) = spawn(core, 0.0)
    core.spawned(pool_id, 42)
    with pytest.raises(UnknownWorker, match="pid 42"):
        core.attach(pool_id, 43, token(pool_id), 0.0)


def test_exit_frees_runner_id_and_worker_is_never_reused() -> None:
    core = warm_pool(1)
    worker = core.claim(RunnerWorkerId("1-1"), 1.0)
    assert worker is not None
    core.ready(worker.pool_id, 1.1)
    core.exited(worker.pool_id, 0, 2.0)
    assert core.holder_of(RunnerWorkerId("1-1")) is None
    with pytest.raises(IllegalTransition, match="exited to idle"):
        worker.move(WorkerState.IDLE, 3.0)


def test_draining_refuses_claims_and_spawns() -> None:
    core = warm_pool(2)
    core.draining = True
    with pytest.raises(PoolError, match="shutting down"):
        core.claim(RunnerWorkerId("a"), 1.0)
    core.exited(PoolId("worker-1"), 0, 1.0)
    assert core.plan_spawns(1.0).spawn == ()


def test_cold_deaths_back_off_exponentially_and_reset_on_attach() -> None:
    core = PoolCore(1, 2, backoff=Backoff(base=1.0, cap=8.0))
    now = 0.0
    delays = []
    for _ in range(5):
        plan = core.plan_spawns(now)
        assert plan.spawn, "a spawn was due"
        for pool_id in plan.spawn:
            core.exited(pool_id, 1, now)  # died before getting warm
        recheck = core.plan_spawns(now).recheck_at
        assert recheck is not None
        delays.append(recheck - now)
        now = recheck
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    # while crash-looping, probe one at a time
    plan = core.plan_spawns(now)
    assert len(plan.spawn) == 1
    core.issue(plan.spawn[0], "t")
    core.attach(plan.spawn[0], 0, "t", now)
    assert core.consecutive_crashes == 0
    core.claim(RunnerWorkerId("r"), now)
    assert len(core.plan_spawns(now).spawn) == 1  # no backoff: replacement at once


def test_exit_after_serving_is_not_a_crash() -> None:
    core = warm_pool(1)
    worker = core.claim(RunnerWorkerId("a"), 1.0)
    assert worker is not None
    core.exited(worker.pool_id, 1, 2.0)
    assert core.consecutive_crashes == 0


@pytest.mark.parametrize("target,cap", [(-1, 2), (3, 2)])
def test_bad_sizes_rejected(target: int, cap: int) -> None:
    with pytest.raises(ValueError, match="target_idle"):
        PoolCore(target, cap)


# -- seats: the `slot` label of the per-worker usage metrics -----------------------------


def _run_seats(core: PoolCore, steps: list[tuple[str, str]]) -> dict[str, int | None]:
    """Applies ("claim", runner id), ("ready", runner id), ("stop", runner id),
    ("exit", runner id) and ("warm", "") steps; returns each runner id's seat."""
    seats: dict[str, int | None] = {}
    now = 10.0
    for verb, rid in steps:
        now += 1.0
        if verb == "warm":
            for i, pool_id in enumerate(spawn(core, now)):
                core.spawned(pool_id, 1000 + int(pool_id.rsplit("-", 1)[1]))
                core.attach(pool_id, 1000 + int(pool_id.rsplit("-", 1)[1]), token(pool_id),
                            now + i)
            continue
        if verb == "claim":
            worker = core.claim(RunnerWorkerId(rid), now)
            assert worker is not None, f"no idle worker for {rid}"
            seats[rid] = worker.seat
            continue
        holder = core.holder_of(RunnerWorkerId(rid))
        assert holder is not None
        if verb == "ready":
            core.ready(holder.pool_id, now)
        elif verb == "stop":
            core.stopping(holder.pool_id, now, why="StopWorker")
        elif verb == "exit":
            core.exited(holder.pool_id, 0, now)
    return seats


@pytest.mark.parametrize(("steps", "expected", "occupied"), [
    pytest.param([("claim", "1-1"), ("claim", "2-1")], {"1-1": 0, "2-1": 1}, {0, 1},
                 id="first-two-stages-take-seats-0-and-1"),
    pytest.param([("claim", "1-1"), ("claim", "2-1"), ("exit", "1-1"), ("warm", ""),
                  ("claim", "3-1")], {"1-1": 0, "2-1": 1, "3-1": 0}, {0, 1},
                 id="an-exit-frees-its-seat-for-the-next-stage"),
    pytest.param([("claim", "1-1"), ("claim", "2-1"), ("stop", "2-1"), ("warm", ""),
                  ("claim", "3-1")], {"1-1": 0, "2-1": 1, "3-1": 1}, {0, 1},
                 id="a-stop-frees-its-seat-before-the-exit"),
    pytest.param([("claim", "1-1"), ("ready", "1-1"), ("claim", "2-1"), ("exit", "1-1"),
                  ("exit", "2-1"), ("warm", ""), ("claim", "1-2"), ("claim", "2-2")],
                 {"1-1": 0, "2-1": 1, "1-2": 0, "2-2": 1}, {0, 1},
                 id="a-runner-restart-reuses-the-same-seats"),
    pytest.param([("claim", "1-1"), ("claim", "2-1"), ("warm", ""), ("claim", "3-1")],
                 {"1-1": 0, "2-1": 1, "3-1": 2}, {0, 1, 2},
                 id="more-stages-than-workers-overflow-to-seat-2"),
    pytest.param([("claim", "1-1"), ("claim", "2-1"), ("warm", ""), ("claim", "3-1"),
                  ("exit", "1-1"), ("warm", ""), ("claim", "4-1")],
                 {"1-1": 0, "2-1": 1, "3-1": 2, "4-1": 0}, {0, 1, 2},
                 id="lowest-free-seat-first"),
])
def test_seats(steps: list[tuple[str, str]], expected: dict[str, int], occupied: set[int]
               ) -> None:
    core = warm_pool(2)
    assert _run_seats(core, steps) == expected
    assert set(core.seats()) == occupied
    for seat, worker in core.seats().items():
        assert worker.seat == seat and worker.state in (WorkerState.ASSIGNED, WorkerState.BUSY)


def test_an_exited_worker_keeps_the_seat_it_had_and_why_it_was_stopped() -> None:
    core = warm_pool(1)
    worker = core.claim(RunnerWorkerId("1-1"), 5.0)
    assert worker is not None
    core.stopping(worker.pool_id, 6.0, why="the runner sent StopWorker for stage 1-1")
    core.stopping(worker.pool_id, 6.5, reason="a later reason does not overwrite")
    core.exited(worker.pool_id, -15, 7.0)
    assert worker.seat == 0 and not worker.seated
    assert worker.stop_reason == "the runner sent StopWorker for stage 1-1"
    assert worker.last_error == "a later reason does not overwrite"
    assert core.seats() == {}


def test_a_worker_that_attaches_before_its_pid_is_reported_gets_the_hello_pid() -> None:
    core = PoolCore(target_idle=1, max_processes=2)
    (pool_id,) = spawn(core, 0.0)
    worker = core.attach(pool_id, 4321, token(pool_id), 1.0)
    assert worker.pid == 4321
    core.spawned(pool_id, 4321)  # the launcher's report, late, agrees
    assert core.workers[pool_id].pid == 4321
