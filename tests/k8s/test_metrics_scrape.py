"""Scrape a running sidecar's /metrics during a real Beam pipeline.

What the PodMonitor would see, and what the HPA's busy fraction is made of:
workers go busy while a stage runs and back to idle after, time to ready and
assignment wait are observed once per stage, the worker that served is
replaced (restarts counter, cause "served").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from harness_pool.sidecar.server import Sidecar
from tests.k8s.helpers import free_port, scrape, total, value, wait_for
from tests.sidecar.beam_helpers import BackgroundJob, run


def test_metrics_move_with_a_real_pipeline(sidecar_factory: Callable[..., Sidecar],
                                           tmp_path: Path) -> None:
    port = free_port()
    sidecar = sidecar_factory(workers=2, metrics_port=port)
    assert sidecar.metrics_port == port
    before = scrape(port)
    assert value(before, "harness_pool_pool_size") == 2
    assert value(before, "harness_pool_workers", state="idle") == 2
    assert value(before, "harness_pool_workers", state="busy") == 0
    assert value(before, "harness_pool_time_to_ready_seconds_count") == 0
    assert total(before, "harness_pool_worker_restarts_total") == 0
    assert value(before, "harness_pool_worker_warm_seconds_count") >= 2

    job = BackgroundJob(sidecar.address, str(tmp_path))
    try:
        job.wait_started()
        wait_for(lambda: value(scrape(port), "harness_pool_workers", state="busy") >= 1, 30,
                 "a busy worker on /metrics while the stage runs")
        during = scrape(port)
        assert value(during, "harness_pool_time_to_ready_seconds_count") >= 1
        assert value(during, "harness_pool_assignment_wait_seconds_count") >= 1
        assert value(during, "harness_pool_assignments_total", kind="pooled") >= 1
        # the busy fraction the HPA scales on: busy / pool size
        busy = value(during, "harness_pool_workers", state="busy")
        assert 0 < busy / value(during, "harness_pool_pool_size") <= 1
    finally:
        job.release()
        job.join()
    assert job.error is None, job.error

    def settled() -> bool:
        s = scrape(port)
        return (value(s, "harness_pool_workers", state="busy") == 0
                and value(s, "harness_pool_workers", state="idle") == 2
                and value(s, "harness_pool_worker_restarts_total", cause="served") >= 1)

    wait_for(settled, 60, "busy back to 0, 2 idle, the served worker replaced")
    after = scrape(port)
    ready_count = value(after, "harness_pool_time_to_ready_seconds_count")
    assert ready_count >= value(during, "harness_pool_time_to_ready_seconds_count")
    assert total(after, "harness_pool_start_worker_errors_total") == 0

    # A second pipeline: observed again.
    run(sidecar.address, lambda p: assert_that(p | beam.Create([1, 2, 3]) | beam.Map(
        lambda x: x * 2), equal_to([2, 4, 6])))
    wait_for(lambda: value(scrape(port), "harness_pool_time_to_ready_seconds_count")
             > ready_count, 30, "time to ready observed for the second pipeline")
