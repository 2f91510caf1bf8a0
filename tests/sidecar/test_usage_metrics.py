"""Per-slot worker CPU and RSS from /proc, with real Beam pipelines through a real sidecar.

A CPU-heavy UDF makes ``harness_pool_worker_cpu_seconds_total{slot}`` rise while it
runs (about one CPU second per second, as the machine allows); an idle stage (a UDF
that sleeps) adds next to nothing; ``harness_pool_worker_rss_bytes{slot}`` is the
worker's memory while it holds the stage and 0 after. Status says which slot each
worker held and, once it exited, why it ended (JSON and the table).
"""

from __future__ import annotations

import time
from pathlib import Path

from harness_pool.pool.procstat import read_usage
from harness_pool.sidecar.cli import format_table, status_dict
from harness_pool.sidecar.metrics import RESTART_CAUSES, START_ERROR_REASONS
from harness_pool.sidecar.server import Sidecar
from tests.k8s.helpers import wait_for
from tests.sidecar.beam_helpers import BackgroundJob

CPU = "harness_pool_worker_cpu_seconds_total"
RSS = "harness_pool_worker_rss_bytes"


def value(sidecar: Sidecar, name: str, **labels: str) -> float:
    got = sidecar.metrics.registry.get_sample_value(name, labels)
    assert got is not None, f"{name}{labels} is not exported"
    return got


def test_every_slot_and_label_exists_at_zero_from_the_start(sidecar_factory) -> None:
    sidecar = sidecar_factory(workers=3, warm=False)
    for slot in ("0", "1", "2"):
        assert value(sidecar, CPU, slot=slot) == 0.0
        assert value(sidecar, RSS, slot=slot) == 0.0
    for reason in START_ERROR_REASONS:
        assert value(sidecar, "harness_pool_start_worker_errors_total", reason=reason) == 0.0
    for cause in RESTART_CAUSES:
        assert value(sidecar, "harness_pool_worker_restarts_total", cause=cause) == 0.0


def test_cpu_rises_under_a_cpu_heavy_udf_and_stays_low_for_an_idle_one(
        sidecar_factory, tmp_path: Path) -> None:
    sidecar = sidecar_factory(workers=1, usage_interval=0.5)
    assert value(sidecar, CPU, slot="0") == 0.0

    # -- busy: the UDF spins until released
    busy_dir = tmp_path / "busy"
    busy_dir.mkdir()
    job = BackgroundJob(sidecar.address, str(busy_dir), burn=True)
    try:
        (pid,) = job.wait_started()
        first = value(sidecar, CPU, slot="0")
        t0 = time.monotonic()
        cpu0 = read_usage(pid)
        time.sleep(3.0)
        during = value(sidecar, CPU, slot="0")
        cpu1 = read_usage(pid)
        elapsed = time.monotonic() - t0
        rss = value(sidecar, RSS, slot="0")
        (worker,) = [w for w in sidecar.status().workers if w.pid == pid]
    finally:
        job.release()
        job.join()
    assert cpu0 is not None and cpu1 is not None
    burnt = cpu1.cpu_seconds - cpu0.cpu_seconds  # the worker's own clock, same 3 s
    assert burnt > 0.5, f"the busy UDF got only {burnt:.2f} CPU s in {elapsed:.1f} s"
    rise = during - first
    # The metric follows the worker's own clock, give or take a sampling interval (0.5 s,
    # at most one CPU each) at either end, and a sampler thread scheduled late.
    assert rise > 0.3 and abs(rise - burnt) <= 2 * 0.5 + 0.2, (rise, burnt)
    assert rss > 50 * 2**20, f"a Beam worker's RSS is tens of MiB, not {rss}"
    assert worker.HasField("slot") and worker.slot == 0 and worker.state == "busy"
    assert sidecar.pool.wait_until_no_stage(30)
    busy_total = value(sidecar, CPU, slot="0")
    assert busy_total >= during
    wait_for(lambda: value(sidecar, RSS, slot="0") == 0.0, 10, "the slot's RSS back to 0")

    # -- idle: the UDF sleeps as long
    idle_dir = tmp_path / "idle"
    idle_dir.mkdir()
    job = BackgroundJob(sidecar.address, str(idle_dir))
    try:
        job.wait_started()
        time.sleep(3.0)
    finally:
        job.release()
        job.join()
    assert sidecar.pool.wait_until_no_stage(30)
    idle_rise = value(sidecar, CPU, slot="0") - busy_total
    print(f"\nslot 0: busy UDF +{rise:.2f} CPU s in {elapsed:.1f} s (its own clock: "
          f"{burnt:.2f}); idle stage +{idle_rise:.2f} CPU s in its whole life")
    assert idle_rise < 0.5, f"an idle stage cost {idle_rise:.2f} CPU s"
    assert idle_rise < rise / 2


def test_status_says_why_each_worker_ended(sidecar_factory, tmp_path: Path) -> None:
    sidecar = sidecar_factory(workers=1)
    job = BackgroundJob(sidecar.address, str(tmp_path))
    (pid,) = job.wait_started()
    job.release()
    job.join()
    wait_for(lambda: any(w.pid == pid and w.state == "exited" for w in sidecar.status().workers),
          30, f"worker pid {pid} exited")
    status = sidecar.status()
    (worker,) = [w for w in status.workers if w.pid == pid]
    (record,) = [a for a in status.assignments if a.pid == pid]
    assert record.detail.startswith(f"stage {record.runner_worker_id} "), record.detail
    assert record.outcome in ("finished", "stopped")
    assert record.detail in worker.end_reason and "exit" in worker.end_reason, worker
    as_json = next(w for w in status_dict(status)["workers"] if w["pid"] == pid)
    assert as_json["end_reason"] == worker.end_reason and as_json["slot"] == 0
    row = next(line for line in format_table(status).splitlines()
               if line.startswith(worker.pool_id))
    assert worker.end_reason[:40] in row
    live = next(w for w in status.workers if w.state == "idle")
    assert not live.HasField("slot") and not live.end_reason
