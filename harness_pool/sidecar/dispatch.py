"""Chooses who serves a stage: today the pooled workers; fixed-endpoint mode adds
external workers in front of them (see ``harness_pool.proxy``)."""

from __future__ import annotations

from harness_pool.pool.core import RunnerWorkerId
from harness_pool.pool.pool import Pool
from harness_pool.v1 import pool_pb2


class PooledDispatcher:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def assign(self, runner_id: RunnerWorkerId, assignment: pool_pb2.Assignment,
               assign_timeout: float, start_timeout: float) -> tuple[str, float]:
        worker, seconds = self.pool.assign(runner_id, assignment, assign_timeout, start_timeout)
        return worker.pool_id, seconds

    def stop(self, runner_id: RunnerWorkerId) -> bool:
        return self.pool.stop(runner_id)
