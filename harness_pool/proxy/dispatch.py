"""Fixed-endpoint mode's ``Dispatcher``: external workers first, then the pooled ones.

A waiting external id (its boot's GetProvisionInfo held here) takes the stage;
when none waits and pooled workers exist, the pooled dispatcher serves; with
no pooled workers the call waits up to the assign timeout for a boot to
arrive. Every wait ends when the runner's StartWorker call goes away.
"""

from __future__ import annotations

import time

from harness_pool.pool.core import RunnerWorkerId
from harness_pool.pool.dispatch import AssignError, Caller, Dispatcher, Limits
from harness_pool.proxy.core import ProxyError
from harness_pool.proxy.workers import ExternalWorkers
from harness_pool.v1 import pool_pb2


class ExternalDispatcher:
    def __init__(self, external: ExternalWorkers, pooled: Dispatcher) -> None:
        self.external = external
        self.pooled = pooled

    def check(self, runner_id: RunnerWorkerId) -> None:
        holder = self.external.holder(runner_id)
        if holder:
            raise AssignError(f"stage {runner_id}: runner worker id is already served by "
                              f"external worker '{holder}'", "external_refused")
        if self.external.settings.pooled_workers > 0:
            self.pooled.check(runner_id)

    def assign(self, runner_id: RunnerWorkerId, assignment: pool_pb2.Assignment,
               limits: Limits, caller: Caller) -> tuple[str, float]:
        t0 = time.monotonic()
        ext = self.external
        pooled = ext.settings.pooled_workers > 0
        try:
            wait = 0.0 if pooled else limits.assign_timeout
            link = ext.try_assign(runner_id, assignment, wait, caller)
        except ProxyError as exc:
            raise AssignError(str(exc), "external_refused") from exc
        if link is None:
            if pooled and caller.active():
                return self.pooled.assign(runner_id, assignment, limits, caller)
            reason = "no_idle_worker" if caller.active() else "cancelled"
            ext.metrics.start_error(reason)
            raise AssignError(f"stage {runner_id}: no external worker waiting within "
                              f"{limits.assign_timeout:.0f}s ({ext.describe()})", reason)
        deadline = t0 + limits.start_timeout
        while not link.connected.wait(min(0.25, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or not caller.active():
                break
        if not link.connected.is_set() or link.ended.is_set():
            error = link.error or (
                f"external worker {link.wid} did not connect its control stream within "
                f"{limits.start_timeout:.0f}s" if caller.active() else
                f"StartWorker was cancelled by its caller before external worker {link.wid} "
                "connected")
            ext.end(link.wid, link.stage.serial, error)
            ext.metrics.start_error("start_timeout" if not link.error else "start_failed")
            raise AssignError(f"stage {runner_id}: {error}", "start_failed")
        ext.metrics.assignments.labels("external").inc()
        return link.wid, time.monotonic() - t0

    def stop(self, runner_id: RunnerWorkerId) -> bool:
        return self.external.stop_stage(runner_id) or self.pooled.stop(runner_id)
