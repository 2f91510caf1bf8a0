"""Full cycles through the fault proxy in front of the real cluster's REST API: connection
resets (before and after the request reached Flink), 500s, HTML pages with 200, slow
answers past the request timeout and truncated bodies, injected at random (seeded).

Every cycle must complete or fail cleanly (a failure message, never a traceback), the
state file must stay a readable scheduler state, and exactly one streaming job must run
afterwards with its counts continuing. ``HARNESS_POOL_FAULT_CYCLES`` (default 2) sets
the number of cycles.
"""

from __future__ import annotations

import collections
import json
import os
import time

import pytest

from harness_pool.scheduler.backends.flink_rest import FlinkRestBackend
from harness_pool.scheduler.config import load_cycle
from harness_pool.scheduler.runner import CycleRunner
from harness_pool.scheduler.store import FileStateStore
from harness_pool.testing.fault_proxy import FaultProxy

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


def test_cycles_through_a_faulty_network_complete_or_fail_cleanly(cluster, tmp_path):
    since = time.time() * 1000
    cycles = int(os.environ.get("HARNESS_POOL_FAULT_CYCLES", "2"))
    with FaultProxy(cluster.rest_url, slow_delay=4.0) as proxy:
        cfg_path = write_cycle(tmp_path, proxy.url)
        doc = cfg_path.read_text().replace("submit_grace: 10s",
                                           "submit_grace: 10s\n  request_timeout: 3s")
        cfg_path.write_text(doc)
        start_streaming(cfg_path, tmp_path)
        cfg = load_cycle(cfg_path)
        outcomes = []
        for n in range(cycles):
            proxy.random.seed(n)
            proxy.rate = 0.12
            runner = CycleRunner(cfg, FlinkRestBackend(cfg.backend, cfg.savepoints.dir),
                                 FileStateStore(cfg.state.path))
            mark = len(proxy.injected)
            state = runner.run_once()
            proxy.rate = 0.0
            last = state.cycles[-1]
            faults = collections.Counter(f.value for _, _, f in proxy.injected[mark:])
            outcomes.append(("ok" if last.ok else f"failed: {last.failure}", dict(faults)))
            json.loads((tmp_path / "state.json").read_text())  # never torn
            assert last.ok or last.failure, "a failed cycle says why"
            deadline = time.monotonic() + 60
            while len(running(cluster.rest_url, "streaming-count")) != 1:
                assert time.monotonic() < deadline, "not exactly one streaming job"
                time.sleep(0.5)
            wait_for_counts(tmp_path / "counts", len(read_counts(tmp_path / "counts")) + 10)
            assert_counts_continue(tmp_path / "counts")
        bounded = jobs_since(cluster.rest_url, "bounded-words", since)
        completed = sum(1 for o, _ in outcomes if o == "ok")
        assert completed <= len(bounded) <= cycles, f"bounded runs {bounded} for {outcomes}"
        assert set(bounded) <= {"FINISHED"}, bounded
        injected = collections.Counter(f.value for _, _, f in proxy.injected)
    print(f"\nFIGURES fault-proxy cycles: {outcomes}; injected in total: {dict(injected)}")
    assert sum(injected.values()) >= cycles, "the proxy injected faults"
