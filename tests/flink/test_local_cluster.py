"""The local Flink cluster helper: start, env reaches the TaskManager, run a job, stop by pid."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from harness_pool.flink.local_cluster import LocalFlinkCluster

pytestmark = [pytest.mark.slow, pytest.mark.flink]
ROOT = Path(__file__).resolve().parents[2]
BOUNDED = ROOT / "harness_pool" / "scheduler" / "examples" / "bounded_job.py"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_shared_cluster_runs_a_python_job_to_finished(flink_cluster, tmp_path):
    out = tmp_path / "words.txt"
    job_id = flink_cluster.run_python_job(BOUNDED, [str(out)])
    deadline = time.monotonic() + 90
    while flink_cluster.job_state(job_id) != "FINISHED":
        assert time.monotonic() < deadline, flink_cluster.job_state(job_id)
        time.sleep(0.25)
    assert out.read_text().splitlines()[-1] == "a,3"
    overview = requests.get(f"{flink_cluster.rest_url}/overview", timeout=5).json()
    assert overview["slots-total"] == 4


def test_own_cluster_env_reaches_taskmanager_and_stop_kills_every_pid(tmp_path):
    cluster = LocalFlinkCluster(tmp_path / "c", slots=2, env={"HP_MARK": "seen-by-tm"})
    with cluster:
        pids = cluster.pids
        environ = Path(f"/proc/{pids['taskmanager']}/environ").read_bytes()
        assert b"HP_MARK=seen-by-tm" in environ
        assert cluster.log_dir.is_dir() and any(cluster.log_dir.iterdir())
        assert (cluster.conf_dir / "config.yaml").read_text().count(str(cluster.rest_port)) == 1
    assert not any(_alive(pid) for pid in pids.values())


def test_start_failure_still_stops_what_started(tmp_path):
    cluster = LocalFlinkCluster(tmp_path / "c", slots=1, start_timeout=0.5)
    with pytest.raises(Exception, match="not ready"):
        cluster.start()
    assert cluster.pids == {}


def test_cli_holds_the_cluster_until_sigterm(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness_pool", "flink-cluster", "start", "--workdir",
         str(tmp_path / "c"), "--slots", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(f"{url}/overview", timeout=5).json()["slots-total"] == 1
        proc.terminate()
        assert proc.wait(timeout=60) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/overview", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
