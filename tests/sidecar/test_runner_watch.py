"""The runner watch: a worker whose runner vanished is ended within the stated bound.

Pure decisions table-driven; the probe against real sockets; and a real Beam
runner (``FnApiRunner`` in its own process) killed while its stage's UDF holds the
worker's GIL in a C call, so the worker itself can notice nothing: only the
sidecar's watch can end it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness_pool.pool.core import PoolId
from harness_pool.sidecar.runner_watch import Endpoint, Lost, RunnerVerdicts, probe
from harness_pool.sidecar.settings import SidecarSettings
from tests.sidecar.beam_helpers import gate_pids
from tests.sidecar_fixtures import pid_alive

A, B = PoolId("worker-1"), PoolId("worker-2")
R, OK, UNK = Endpoint.REFUSED, Endpoint.ANSWERS, Endpoint.UNKNOWN


@pytest.mark.parametrize(("observations", "lost"), [
    pytest.param([(A, R, 0.0), (A, R, 1.0), (A, R, 2.9)], [], id="refused-less-than-3s"),
    pytest.param([(A, R, 0.0), (A, R, 1.0), (A, R, 3.0)], [(A, 3.0)], id="refused-3s-is-lost"),
    pytest.param([(A, R, 0.0), (A, OK, 2.0), (A, R, 3.0), (A, R, 5.9)], [],
                 id="an-answer-starts-over"),
    pytest.param([(A, R, 0.0), (A, UNK, 2.0), (A, R, 3.0), (A, R, 5.0)], [],
                 id="a-timeout-is-no-evidence-and-starts-over"),
    pytest.param([(A, R, 0.0), (B, OK, 0.0), (A, R, 4.0), (B, OK, 4.0)], [(A, 4.0)],
                 id="stages-are-judged-apart"),
])
def test_verdicts(observations: list[tuple[PoolId, Endpoint, float]],
                  lost: list[tuple[PoolId, float]]) -> None:
    verdicts = RunnerVerdicts(lost_after=3.0)
    got: list[Lost] = []
    for pool_id, seen, now in observations:
        decision = verdicts.observe(pool_id, "127.0.0.1:1", seen, now)
        if decision is not None:
            got.append(decision)
    assert [(d.pool_id, d.refused_for) for d in got] == lost


def test_verdicts_forget_stages_no_longer_held() -> None:
    verdicts = RunnerVerdicts(lost_after=3.0)
    verdicts.observe(A, "127.0.0.1:1", R, 0.0)
    verdicts.keep_only([])
    assert verdicts.observe(A, "127.0.0.1:1", R, 3.5) is None  # refused since 3.5, not 0


def test_probe_real_endpoints() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert probe(f"127.0.0.1:{port}") is Endpoint.ANSWERS
        assert probe(f"localhost:{port}") is Endpoint.ANSWERS
    assert probe(f"127.0.0.1:{port}") is Endpoint.REFUSED  # nobody listens any more
    assert probe("unix:/tmp/somewhere.sock") is Endpoint.UNKNOWN


RUNNER = r"""
import sys
import apache_beam as beam
from apache_beam.runners.portability import fn_api_runner
from apache_beam.transforms import environments


class HoldTheGil(beam.DoFn):
    def __init__(self, folder):
        self.folder = folder

    def process(self, x):
        import ctypes, os
        open(os.path.join(self.folder, f"pid-{os.getpid()}"), "w").close()
        ctypes.PyDLL(None).sleep(120)  # a C call that keeps the GIL: the harness is deaf
        yield x


r = fn_api_runner.FnApiRunner(default_environment=environments.ExternalEnvironment(sys.argv[1]))
with beam.Pipeline(runner=r) as p:
    _ = p | beam.Create([1]) | beam.ParDo(HoldTheGil(sys.argv[2]))
"""


def test_a_deaf_worker_of_a_killed_runner_is_recycled_within_the_bound(
        sidecar_factory, tmp_path: Path) -> None:
    sidecar = sidecar_factory(workers=1)
    s: SidecarSettings = sidecar.settings
    bound = s.runner_lost_after + s.runner_check_interval + s.stop_grace
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, sidecar.address, str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not gate_pids(str(tmp_path)):
            assert runner.poll() is None, "the runner ended before its stage started"
            assert time.monotonic() < deadline, "the stage never started"
            time.sleep(0.05)
        (pid,) = gate_pids(str(tmp_path))
        # A live runner's stage is left alone, however long it takes.
        time.sleep(bound)
        (record,) = [a for a in sidecar.status().assignments if a.pid == pid]
        assert record.outcome == "running" and pid_alive(pid), record
        killed_at = time.monotonic()
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(30)
        while pid_alive(pid) and time.monotonic() - killed_at < bound + 30:
            time.sleep(0.05)
        gone_after = time.monotonic() - killed_at
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(30)
    assert not pid_alive(pid), f"the worker of a killed runner still runs {gone_after:.0f} s on"
    print(f"\nworker of the killed runner gone {gone_after:.1f} s after the SIGKILL "
          f"(stated bound {bound:g} s)")
    # The stated bound, plus room for a loaded 2-core machine (the watch thread late).
    assert gone_after <= bound + 10.0, f"{gone_after:.1f} s; the sidecar states {bound:g} s"
    (record,) = [a for a in sidecar.status().assignments if a.pid == pid]
    assert record.outcome == "failed"
    assert f"stage {record.runner_worker_id}: the runner's control endpoint" in record.detail
    assert "connections refused" in record.detail and "recycled" in record.detail
    deadline = time.monotonic() + 10  # the supervisor reaps it within a tick or two
    while time.monotonic() < deadline:
        (worker,) = [w for w in sidecar.status().workers if w.pid == pid]
        if worker.state == "exited":
            break
        time.sleep(0.05)
    assert worker.state == "exited" and "SIGTERM" in worker.end_reason, worker
    assert record.detail in worker.end_reason
    assert sidecar.wait_warm(1, timeout=60)
