"""``harness-pool demo`` (the README's first command) really runs pipelines through the pool."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_runs_two_jobs_on_two_fresh_workers() -> None:
    out = subprocess.run([sys.executable, "-m", "harness_pool", "--log-level", "WARNING", "demo"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "job 1 top words: job 9, worker 6" in out.stdout
    assert "job 2 top words: job 9, worker 6" in out.stdout
    served = re.findall(
        r"stage (\S+)\s+worker (\S+)\s+pid (\d+)\s+ready in\s+([\d.]+) ms -> finished",
        out.stdout)
    assert len(served) == 2, out.stdout
    assert len({pid for _, _, pid, _ in served}) == 2, "one process served two jobs"
    assert "POOL ID" in out.stdout
