"""``harness-pool savepoints trigger|list|resume|dispose`` against the real cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .test_flink_cycle import running, start_streaming, wait_for_counts, write_cycle

pytestmark = [pytest.mark.slow, pytest.mark.flink]
ROOT = Path(__file__).resolve().parents[2]


def hp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness_pool", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=dict(os.environ))


def failure_causes(cluster) -> str:
    """Flink's root exception of every failed streaming-count job (for a failure message)."""
    jobs = requests.get(f"{cluster.rest_url}/jobs/overview", timeout=10).json()["jobs"]
    causes = []
    for job in jobs:
        if job["name"] == "streaming-count" and job["state"] == "FAILED":
            answer = requests.get(f"{cluster.rest_url}/jobs/{job['jid']}/exceptions",
                                  timeout=10).json()
            entries = answer.get("exceptionHistory", {}).get("entries") or [{}]
            cause = answer.get("root-exception") or entries[0].get("stacktrace")
            causes.append(f"{job['jid']}: {str(cause)[:3000]}")
    return "\nFlink's causes:\n" + "\n".join(causes)


def test_trigger_list_resume_dispose(cluster, tmp_path):
    cfg = write_cycle(tmp_path, cluster.rest_url)
    start_streaming(cfg, tmp_path)
    trig = hp("savepoints", "trigger", "--config", str(cfg), "--job", "streaming")
    assert trig.returncode == 0, trig.stdout + trig.stderr
    path = trig.stdout.strip().splitlines()[-1]
    assert path.startswith("file:") and Path(path[5:]).exists()
    listed = hp("savepoints", "list", "--config", str(cfg))
    assert path in listed.stdout
    # a running copy exists: resume must refuse to start a second one
    refused = hp("savepoints", "resume", "--config", str(cfg), "--job", "streaming")
    assert refused.returncode == 1 and "refusing to start a second copy" in refused.stdout
    cluster.cancel_all()
    resumed = hp("savepoints", "resume", "--config", str(cfg), "--job", "streaming")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr + failure_causes(cluster)
    deadline = time.monotonic() + 60
    while not running(cluster.rest_url, "streaming-count"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    wait_for_counts(tmp_path / "counts", 40, timeout=120)
    cluster.cancel_all()
    gone = hp("savepoints", "dispose", "--config", str(cfg), "--path", path)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not Path(path[5:]).exists()
    assert path not in hp("savepoints", "list", "--config", str(cfg)).stdout
    unknown = hp("savepoints", "trigger", "--config", str(cfg), "--job", "nope")
    assert unknown.returncode == 2 and "unknown job 'nope'" in unknown.stdout
