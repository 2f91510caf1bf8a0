"""Bad input against the real cluster (and a port nobody listens on): clear errors, intact state."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness_pool.flink.local_cluster import free_port
from harness_pool.scheduler.backends.flink_rest import FlinkRestBackend
from harness_pool.scheduler.config import load_cycle
from harness_pool.scheduler.events import SavepointState
from harness_pool.scheduler.model import CycleState, JobStatus
from harness_pool.scheduler.runner import CycleRunner
from harness_pool.scheduler.store import FileStateStore

from .test_flink_cycle import running, wait_for_counts, write_cycle

ROOT = Path(__file__).resolve().parents[2]


def once(cfg_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness_pool", "scheduler", "once",
                           "--config", str(cfg_path)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_unreachable_flink_is_a_clear_failure_with_exit_1(tmp_path):
    cfg_path = write_cycle(tmp_path, f"http://127.0.0.1:{free_port()}",
                           steps=[{"action": "suspend", "job": "streaming", "timeout": "1s"}],
                           savepoints={"timeout": "1s"})
    result = once(cfg_path)
    assert result.returncode == 1
    failure = json.loads(result.stdout.strip().splitlines()[-1])["failure"]
    assert "unreachable" in failure and "127.0.0.1" in failure
    json.loads((tmp_path / "state.json").read_text())


def test_bad_config_exits_2_and_lists_every_problem(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nbackend: {type: flink-rest}\nstate: {path: s.json}\n"
                    "jobs: {a: {python: a.py}}\nsteps: [{action: wait, job: b, timeout: -3s}]\n"
                    "schedule: {cron: 'every tuesday'}\n")
    result = once(path)
    assert result.returncode == 2
    for text in ("backend.url: missing", "steps[0].job: unknown job 'b'; known: a",
                 "steps[0].timeout: got '-3s'", "schedule.cron: got 'every tuesday'"):
        assert text in result.stdout
    assert not (tmp_path / "s.json").exists()


@pytest.mark.slow
@pytest.mark.flink
def test_nonexistent_job_id_fails_the_step_clearly(flink_cluster, tmp_path):
    cfg_path = write_cycle(tmp_path, flink_cluster.rest_url)
    store = FileStateStore(tmp_path / "state.json")
    store.save(CycleState(jobs={"streaming": "0123456789abcdef0123456789abcdef"}))
    cfg = load_cycle(cfg_path)
    state = CycleRunner(cfg, FlinkRestBackend(cfg.backend), store).run_once()
    failure = state.cycles[-1].failure
    assert "Could not find Flink job (0123456789abcdef0123456789abcdef)" in failure
    assert "IS NOT RUNNING" in failure
    assert store.load().cycles[-1].failure == failure


@pytest.mark.slow
@pytest.mark.flink
def test_unwritable_savepoint_dir_leaves_streaming_running(flink_cluster, tmp_path):
    flink_cluster.cancel_all()
    (tmp_path / "blocker").write_text("a file, not a folder")
    cfg_path = write_cycle(tmp_path, flink_cluster.rest_url,
                           savepoints={"dir": (tmp_path / "blocker" / "sp").as_uri(),
                                       "retries": 1, "retry_backoff": "100ms", "timeout": "60s"})
    cfg = load_cycle(cfg_path)
    backend = FlinkRestBackend(cfg.backend, cfg.savepoints.dir)
    backend.submit(cfg.jobs["streaming"], uuid.uuid4().hex, None, None)
    wait_for_counts(tmp_path / "counts", 5)
    try:
        state = CycleRunner(cfg, backend, FileStateStore(cfg.state.path)).run_once()
        failure = state.cycles[-1].failure
        assert "failed 2 times" in failure and "job left RUNNING" in failure, failure
        assert len(running(flink_cluster.rest_url, "streaming-count")) == 1
        assert not state.history
        json.loads((tmp_path / "state.json").read_text())
    finally:
        flink_cluster.cancel_all()


@pytest.mark.slow
@pytest.mark.flink
def test_forgotten_trigger_falls_back_to_the_stopped_jobs_savepoint(flink_cluster, tmp_path):
    flink_cluster.cancel_all()
    cfg = load_cycle(write_cycle(tmp_path, flink_cluster.rest_url))
    backend = FlinkRestBackend(cfg.backend, cfg.savepoints.dir)
    job, job_id = cfg.jobs["streaming"], uuid.uuid4().hex
    backend.submit(job, job_id, None, None)
    try:
        wait_for_counts(tmp_path / "counts", 5, timeout=120)
        backend.stop_with_savepoint(job, job_id, "a" * 32, cfg.savepoints.dir)
        deadline = time.monotonic() + 60
        while (result := backend.savepoint_status(job, job_id, "a" * 32, True)).state \
                is not SavepointState.COMPLETED:
            assert time.monotonic() < deadline and result.state is not SavepointState.FAILED, \
                result
            time.sleep(0.2)
        while backend.job_state(job, job_id) is not JobStatus.FINISHED:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        forgotten = backend.savepoint_status(job, job_id, "b" * 32, True)
        assert forgotten == result
    finally:
        flink_cluster.cancel_all()
