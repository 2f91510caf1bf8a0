"""SIGKILL of the scheduler process *inside* a request, at randomised offsets, on the real cluster.

The fault proxy (harness_pool.testing.fault_proxy) sits between the scheduler and Flink's
REST API and holds back the answer to one request: the stop-with-savepoint, the bounded
job's submission or the streaming job's resubmission. Once that request has gone out to
Flink, the test waits a random fraction of the hold and SIGKILLs ``scheduler once`` (a real
subprocess): the request may or may not have been executed, and the scheduler never saw
the answer. A second ``scheduler once`` must finish the cycle with exactly one streaming
job, the bounded job run exactly once, the counts continuing, and the streaming job
restored from the savepoint this cycle took (never an older one).

``HARNESS_POOL_KILL_SEEDS`` (default 1) sets how many rounds of the three kill targets run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from harness_pool.scheduler.runner import KILL_ENV
from harness_pool.testing.fault_proxy import Fault, FaultProxy, Rule

from .test_flink_cycle import (
    assert_counts_continue,
    jobs_since,
    read_counts,
    running,
    start_streaming,
    wait_for_counts,
    write_cycle,
)

pytestmark = [pytest.mark.slow, pytest.mark.flink]
ROOT = Path(__file__).resolve().parents[2]
RUN = r"^/jars/[^/]+/run$"
HOLD = 4.0
"""How long the proxy holds back the answer; the kill lands inside it."""
TARGETS = [("stop", r"^/jobs/[0-9a-f]+/stop$", 0), ("bounded-submit", RUN, 0),
           ("resume-submit", RUN, 1)]


def scheduler_once(cfg_path: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(KILL_ENV, None)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "harness_pool", "scheduler", "once",
                                 "--config", str(cfg_path)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def test_sigkill_inside_requests_at_random_offsets(cluster, tmp_path):
    since = time.time() * 1000
    rounds = int(os.environ.get("HARNESS_POOL_KILL_SEEDS", "1"))
    log = tmp_path / "scheduler.log"
    outcomes = []
    with FaultProxy(cluster.rest_url) as proxy:
        cfg_path = write_cycle(tmp_path, proxy.url)
        start_streaming(cfg_path, tmp_path)
        for n, (name, path, skip) in enumerate(TARGETS * rounds):
            rng = random.Random(1000 * (n // len(TARGETS)) + n)
            mark = len(proxy.forwarded)
            if not skip:
                proxy.add(Rule("POST", path, Fault.SLOW, times=1, delay=HOLD))
            proc = scheduler_once(cfg_path, log)
            try:
                if skip:  # let the bounded submission pass, hold the resubmission
                    first = proxy.wait_forwarded("POST", path, since=mark, timeout=180)
                    mark = proxy.forwarded.index(first) + 1
                    proxy.add(Rule("POST", path, Fault.SLOW, times=1, delay=HOLD))
                sent = proxy.wait_forwarded("POST", path, since=mark, timeout=180)
                offset = rng.uniform(0.0, HOLD * 0.9)
                time.sleep(max(0.0, sent.at + offset - time.monotonic()))
                proc.kill()
            finally:
                code = proc.wait(timeout=60)
            proxy.clear()
            assert code == -9, f"{name}: the scheduler was not killed in flight ({code})"
            again = scheduler_once(cfg_path, log)
            assert again.wait(timeout=300) == 0, log.read_text()[-3000:]
            state = json.loads((tmp_path / "state.json").read_text())
            last = state["cycles"][-1]
            assert last["ok"], last["failure"]
            outcomes.append((name, round(offset, 2), last["downtime"].get("streaming")))
            streaming = running(cluster.rest_url, "streaming-count")
            assert len(streaming) == 1, f"{name}: {len(streaming)} streaming jobs"
            bounded = jobs_since(cluster.rest_url, "bounded-words", since)
            assert bounded == ["FINISHED"] * (n + 1), f"{name}: bounded runs {bounded}"
            restored = requests.get(f"{cluster.rest_url}/jobs/{streaming[0]['jid']}/checkpoints",
                                    timeout=10).json()["latest"]["restored"]["external_path"]
            newest = max(state["history"], key=lambda r: r["taken_at"])["path"]
            assert restored.rstrip("/") == newest.rstrip("/"), "resumed from an older savepoint"
            wait_for_counts(tmp_path / "counts", len(read_counts(tmp_path / "counts")) + 10)
            assert_counts_continue(tmp_path / "counts")
    print(f"\nFIGURES in-flight kills (target, offset s, downtime s): {outcomes}")
