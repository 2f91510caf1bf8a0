"""The pool shell's waiting rules, without processes: arrival order and callers that leave."""

from __future__ import annotations

import threading
import time

import pytest

from harness_pool.pool.core import PoolCore, PoolError, PoolId, RunnerWorkerId
from harness_pool.pool.dispatch import AssignError, Limits
from harness_pool.pool.pool import Pool
from harness_pool.v1 import pool_pb2


class Leaving:
    """A caller that goes away when told to."""

    def __init__(self) -> None:
        self.gone = threading.Event()
        self._callbacks: list = []

    def active(self) -> bool:
        return not self.gone.is_set()

    def remaining(self) -> float | None:
        return None

    def on_end(self, callback) -> None:
        self._callbacks.append(callback)

    def leave(self) -> None:
        self.gone.set()
        for cb in self._callbacks:
            cb()


def warm_one(pool: Pool) -> PoolId:
    (spec,), _ = pool.plan_spawns()
    pool.spawned(spec.pool_id, 0)
    pool.attach(spec.pool_id, 0, spec.token, 0.1)
    return spec.pool_id


def start(pool: Pool, runner_id: str, caller=None) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def body() -> None:
        try:
            out["worker"] = pool.assign(RunnerWorkerId(runner_id), pool_pb2.Assignment(
                runner_worker_id=runner_id), Limits(30, 30), caller)[0].pool_id
        except (AssignError, PoolError) as exc:
            out["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


def wait_queue(pool: Pool, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(pool._queue) != n:
        assert time.monotonic() < deadline, f"{len(pool._queue)} waiting, expected {n}"
        time.sleep(0.005)


def ready(pool: Pool, pool_id: PoolId) -> None:
    pool.worker_event(pool_id, pool_pb2.WorkerEvent(ready=pool_pb2.Ready()))


@pytest.mark.parametrize("round_", range(30))
def test_waiting_calls_are_served_in_arrival_order_and_a_caller_that_left_gets_nothing(
        round_: int) -> None:
    pool = Pool(PoolCore(target_idle=1, max_processes=1))
    first = warm_one(pool)
    a, a_out = start(pool, "a")
    wait_for(lambda: pool.core.workers[first].runner_worker_id == "a")
    ready(pool, first)
    a.join(10)
    leaving = Leaving()
    b, b_out = start(pool, "b", leaving)  # arrives first, then leaves
    wait_queue(pool, 1)
    c, c_out = start(pool, "c")
    wait_queue(pool, 2)
    d, d_out = start(pool, "d")
    wait_queue(pool, 3)
    leaving.leave()
    b.join(10)
    assert "cancelled" in str(b_out["error"])
    pool.exited(first, 0)  # a's stage is over; the replacement warms
    second = warm_one(pool)
    wait_for(lambda: pool.core.workers[second].runner_worker_id is not None)
    assert pool.core.workers[second].runner_worker_id == "c"  # c arrived before d
    ready(pool, second)
    c.join(10)
    assert c_out["worker"] == second
    pool.drain()
    d.join(10)
    assert "shutting down" in str(d_out["error"])


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.005)
