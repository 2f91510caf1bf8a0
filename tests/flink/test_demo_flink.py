"""``harness-pool demo --flink`` runs a PyFlink job on a real cluster through the pool."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.flink]


def test_demo_flink_serves_each_slot_from_its_own_process() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "harness_pool", "--log-level", "WARNING", "demo", "--flink",
         "--records", "2000"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert re.search(r"job [0-9a-f]{32}: FINISHED in [\d.]+s", out.stdout)
    assert "keyed counts: " + ", ".join(f"k{i}=200" for i in range(10)) in out.stdout
    slots = re.findall(r"slot stage (\d+)-\d+\s+worker (\S+)\s+pid (\d+)", out.stdout)
    assert sorted(s for s, _, _ in slots) == ["1", "2", "3", "4"]
    assert len({pid for _, _, pid in slots}) == 4
