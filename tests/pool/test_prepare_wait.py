"""How StartWorker's wait combines --start-timeout with --prepare-timeout (issue 9), and the
prepare reports the pool hands to its observer. No processes: events are fed by hand."""

from __future__ import annotations

import threading
import time

from harness_pool.pool.core import PoolCore, RunnerWorkerId
from harness_pool.pool.dispatch import AssignError, Limits
from harness_pool.pool.pool import NullObserver, Pool
from harness_pool.v1 import pool_pb2
from tests.pool.test_pool import warm_one


class _Recorder(NullObserver):
    def __init__(self) -> None:
        self.reports: list[pool_pb2.PrepareReport] = []
        self.failures = 0
        self.errors: list[str] = []

    def stage_prepared(self, report: pool_pb2.PrepareReport) -> None:
        self.reports.append(report)

    def dependencies_failed(self) -> None:
        self.failures += 1

    def start_error(self, reason: str) -> None:
        self.errors.append(reason)


def _assign(pool: Pool, stage: str, limits: Limits) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def body() -> None:
        t0 = time.monotonic()
        try:
            pool.assign(RunnerWorkerId(stage), pool_pb2.Assignment(runner_worker_id=stage),
                        limits)
            out["ok"] = True
        except AssignError as exc:
            out["error"] = exc
        out["seconds"] = time.monotonic() - t0

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


def _event(pool: Pool, pool_id, **kwargs) -> None:
    pool.worker_event(pool_id, pool_pb2.WorkerEvent(**kwargs))


def test_a_preparing_worker_gets_the_prepare_budget_then_the_start_timeout() -> None:
    observer = _Recorder()
    pool = Pool(PoolCore(target_idle=1, max_processes=2), observer=observer)
    worker = warm_one(pool)
    thread, out = _assign(pool, "with-deps", Limits(5, start_timeout=0.5, prepare_timeout=2.0))
    time.sleep(0.2)
    _event(pool, worker, preparing=pool_pb2.Preparing(artifacts=3))
    time.sleep(1.0)  # past the start timeout alone: still waiting (preparing)
    assert thread.is_alive() and not out
    _event(pool, worker, ready=pool_pb2.Ready(prepare=pool_pb2.PrepareReport(
        outcome="built", pip_runs=2)))
    thread.join(5)
    assert out.get("ok"), out
    assert [r.outcome for r in observer.reports] == ["built"]


def test_a_worker_that_prepares_too_long_is_a_prepare_timeout() -> None:
    observer = _Recorder()
    pool = Pool(PoolCore(target_idle=1, max_processes=2), observer=observer)
    worker = warm_one(pool)
    thread, out = _assign(pool, "slow-deps", Limits(5, start_timeout=0.3, prepare_timeout=0.5))
    time.sleep(0.1)
    _event(pool, worker, preparing=pool_pb2.Preparing(artifacts=1))
    thread.join(10)
    error = out["error"]
    assert error.reason == "prepare_timeout"
    assert "did not finish preparing the job's dependencies" in str(error)
    assert "0.5s (--prepare-timeout) + 0.3s (--start-timeout)" in str(error)
    assert 0.5 <= out["seconds"] < 5


def test_without_dependencies_the_start_timeout_alone_applies() -> None:
    pool = Pool(PoolCore(target_idle=1, max_processes=2))
    warm_one(pool)
    thread, out = _assign(pool, "no-deps", Limits(5, start_timeout=0.3, prepare_timeout=60))
    thread.join(10)
    assert out["error"].reason == "start_timeout" and out["seconds"] < 5


def test_a_dependency_failure_is_counted_and_answered() -> None:
    observer = _Recorder()
    pool = Pool(PoolCore(target_idle=1, max_processes=2), observer=observer)
    worker = warm_one(pool)
    thread, out = _assign(pool, "bad-deps", Limits(5, 5, 5))
    time.sleep(0.1)
    _event(pool, worker, start_failed=pool_pb2.StartFailed(
        reason="job needs protobuf 4.25.3 but ...", kind="dependencies"))
    thread.join(10)
    assert "job needs protobuf 4.25.3" in str(out["error"])
    assert observer.failures == 1
