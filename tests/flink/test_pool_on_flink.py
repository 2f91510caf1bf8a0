"""A real Flink TaskManager whose every slot's Python stages are served by the pool.

All tests share one cluster (``pool_on_flink``); they run in file order and
each leaves the sidecar running with a warm pool for the next.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import requests

from harness_pool.demo.flink_demo import KEYED_COUNT
from tests.flink_pool_fixtures import JOBS, PoolOnFlink
from tests.sidecar_fixtures import pid_alive

pytestmark = [pytest.mark.slow, pytest.mark.flink]


def status_json(address: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "harness_pool", "status", "--address", address,
                          "--json"], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def job_assignments(env: PoolOnFlink, before: set[str]) -> list[dict]:
    """Assignments (from `harness-pool status --json`) started after ``before`` was taken."""
    records = status_json(env.address)["assignments"]
    return [r for r in records if (r["pool_id"], r["runner_worker_id"]) not in before]


def seen(env: PoolOnFlink) -> set[str]:
    return {(r["pool_id"], r["runner_worker_id"]) for r in status_json(env.address)["assignments"]}


def read_counts(out: Path) -> tuple[dict[str, int], list[tuple[int, str]]]:
    """Max count per key, and (pid, leaked-global) per worker, from keyed_count.py's files."""
    counts: dict[str, int] = defaultdict(int)
    opened = []
    for path in out.glob("result-*.csv"):
        for line in path.read_text().splitlines():
            if line.startswith("#pid,"):
                _, pid, leaked = line.split(",")
                opened.append((int(pid), leaked))
            elif line:
                key, count = line.split(",")
                counts[key] = max(counts[key], int(count))
    return dict(counts), opened


def run_keyed_count(env: PoolOnFlink, name: str, records: int = 2000,
                    rate: float = 0.0) -> tuple[str, Path]:
    out = env.out_dir(name)
    args = [str(out), str(records)] + ([str(rate)] if rate else [])
    return env.cluster.run_python_job(KEYED_COUNT, args), out


def test_each_slot_is_served_by_a_distinct_pooled_process(pool_on_flink: PoolOnFlink) -> None:
    env = pool_on_flink
    before = seen(env)
    job, out = run_keyed_count(env, "distinct", records=10000)
    assert env.wait_job(job) == "FINISHED"
    records = job_assignments(env, before)
    assert len(records) == 4, records  # one Python stage per slot at parallelism 4
    assert len({r["pid"] for r in records}) == 4
    # one runner worker per slot; their ids count up over the TaskManager's life (the
    # session fixture's earlier jobs took the first ones)
    assert len({r["runner_worker_id"] for r in records}) == 4, records
    assert all(r["outcome"] == "finished" for r in records), records
    counts, opened = read_counts(out)
    assert counts == {f"k{i}": 1000 for i in range(10)}
    assert {pid for pid, _ in opened} == {r["pid"] for r in records}


def test_table_api_job_with_python_scalar_udf(pool_on_flink: PoolOnFlink) -> None:
    env = pool_on_flink
    before = seen(env)
    out = env.out_dir("table")
    job = env.cluster.run_python_job(JOBS / "table_udf.py", [str(out)], detached=False)
    assert env.wait_job(job) == "FINISHED"
    rows = [row for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")
            for row in csv.reader(p.read_text().splitlines()) if row]
    assert sorted(w for w, _ in rows) == ["alpha", "beta", "delta", "gamma"]
    assert all(loud.startswith(w.upper() + "!:") for w, loud in rows), rows
    served_pids = {r["pid"] for r in job_assignments(env, before)}
    assert {int(loud.rsplit(":", 1)[1]) for _, loud in rows} <= served_pids


def test_three_jobs_in_a_row_never_share_a_process(pool_on_flink: PoolOnFlink) -> None:
    env = pool_on_flink
    pids_by_job = []
    for i in range(3):
        before = seen(env)
        job, out = run_keyed_count(env, f"row-{i}", records=400)
        assert env.wait_job(job) == "FINISHED"
        counts, opened = read_counts(out)
        assert counts == {f"k{k}": 40 for k in range(10)}
        assert [leaked for _, leaked in opened] == ["None"] * len(opened), \
            "a module-level global from an earlier job was visible"
        pids_by_job.append({r["pid"] for r in job_assignments(env, before)})
        assert env.sidecar is not None and env.sidecar.wait_warm(4, timeout=120)
    assert not (pids_by_job[0] & pids_by_job[1]) and not (pids_by_job[1] & pids_by_job[2])
    outlived = [p for pids in pids_by_job for p in pids if pid_alive(p)]
    assert not outlived, "a worker outlived its job"


def test_module_shipped_with_pyfs_is_importable_then_gone(pool_on_flink: PoolOnFlink,
                                                          tmp_path: Path) -> None:
    env = pool_on_flink
    shipped = tmp_path / "hp_shipped_mod.py"
    shipped.write_text("VALUE = 'shipped-42'\n")
    with_module = env.out_dir("pyfs-with")
    job = env.cluster.run_python_job(JOBS / "uses_shipped_module.py", [str(with_module)],
                                     pyfs=[shipped])
    assert env.wait_job(job) == "FINISHED"
    assert {p.read_text() for p in with_module.glob("probe-*.txt")} == {"present:shipped-42"}
    without = env.out_dir("pyfs-without")
    job = env.cluster.run_python_job(JOBS / "uses_shipped_module.py", [str(without)])
    assert env.wait_job(job) == "FINISHED"
    assert {p.read_text() for p in without.glob("probe-*.txt")} == {"absent"}


def test_kill_9_of_a_slots_worker_mid_job_fails_over(pool_on_flink: PoolOnFlink) -> None:
    env = pool_on_flink
    before = seen(env)
    job, out = run_keyed_count(env, "failover", records=1200, rate=150)
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline:
        running = [r for r in job_assignments(env, before) if r["outcome"] == "running"]
        if len(running) >= 4 and out.glob("result-*.csv"):
            victim = running[0]
        time.sleep(0.2)
    assert victim is not None, "the job's stages never all started"
    time.sleep(1.0)  # mid-job: records are flowing
    os.kill(victim["pid"], signal.SIGKILL)
    assert env.wait_job(job, timeout=240) == "FINISHED"
    records = job_assignments(env, before)
    by_pid = {r["pid"]: r for r in records}
    assert by_pid[victim["pid"]]["outcome"] == "failed"
    assert len(records) > 4, "the pool did not serve the restarted tasks"
    history = requests.get(f"{env.cluster.rest_url}/jobs/{job}/exceptions", timeout=10).json()
    assert history.get("exceptionHistory", {}).get("entries"), "Flink saw no failure"
    counts, _ = read_counts(out)
    assert counts == {f"k{i}": 120 for i in range(10)}


def test_sidecar_outage_fails_the_job_naming_the_address_then_recovers(
        pool_on_flink: PoolOnFlink) -> None:
    env = pool_on_flink
    env.stop_sidecar()
    try:
        job, _ = run_keyed_count(env, "outage", records=200)
        assert env.wait_job(job, timeout=240) == "FAILED"
        text = json.dumps(requests.get(f"{env.cluster.rest_url}/jobs/{job}/exceptions",
                                       timeout=10).json())
        tm_log = "".join(p.read_text(errors="replace")
                         for p in env.cluster.log_dir.glob("*taskexecutor*.log"))
        assert env.address in text or env.address in tm_log, \
            "neither the job's exceptions nor the TaskManager log name the sidecar's address"
    finally:
        env.start_sidecar()
    job, out = run_keyed_count(env, "after-outage", records=200)
    assert env.wait_job(job) == "FINISHED"
    counts, _ = read_counts(out)
    assert counts == {f"k{i}": 20 for i in range(10)}
