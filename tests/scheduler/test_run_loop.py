"""The long-running loop (schedule), /metrics and /healthz."""

from __future__ import annotations

import threading

import requests

from harness_pool.flink.local_cluster import free_port
from harness_pool.scheduler import metrics as m
from harness_pool.scheduler.runner import CycleRunner
from harness_pool.scheduler.store import FileStateStore
from harness_pool.testing.fake_backend import FakeBackend, FakeClock

from .helpers import cycle, with_streaming


class StoppingClock(FakeClock):
    """Sets ``stop`` once the loop has waited for the schedule ``n`` times."""

    def __init__(self, stop: threading.Event, n: int) -> None:
        super().__init__()
        self.stop, self.n, self.waits = stop, n, 0

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if seconds >= 10:  # a schedule wait, not a poll
            self.waits += 1
            if self.waits >= self.n:
                self.stop.set()


def test_run_forever_runs_a_cycle_each_interval(tmp_path):
    stop = threading.Event()
    clock = StoppingClock(stop, n=130)  # 30 s waits: one hour is 120 of them
    cfg = cycle(tmp_path, schedule={"every": "1h"})
    runner = CycleRunner(cfg, with_streaming(FakeBackend()), FileStateStore(cfg.state.path),
                         clock=clock, kill_at="")
    runner.run_forever(stop)
    state = runner.state()
    assert len(state.cycles) == 2
    assert 3600 <= state.cycles[1].started_at - state.cycles[0].started_at < 3700


def test_metrics_and_healthz_endpoints():
    metrics = m.SchedulerMetrics()
    port = free_port()
    server = m.serve(metrics, port, stale_after=60, host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port}"
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 503  # never beat
        metrics.beat()
        health = requests.get(f"{url}/healthz", timeout=5)
        assert health.status_code == 200 and health.text.startswith("ok")
        text = requests.get(f"{url}/metrics", timeout=5).text
        assert "harness_pool_scheduler_heartbeat_timestamp_seconds" in text
        assert requests.get(f"{url}/nope", timeout=5).status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_scheduler_run_serves_health_and_stops_on_sigterm(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import yaml

    cfg = tmp_path / "cycle.yaml"
    cfg.write_text(yaml.safe_dump({
        "backend": {"type": "flink-rest", "url": f"http://127.0.0.1:{free_port()}"},
        "state": {"path": str(tmp_path / "state.json")},
        "jobs": {"s": {"python": "s.py"}},
        "steps": [{"action": "savepoint", "job": "s"}],
    }))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "harness_pool", "scheduler", "run",
                             "--config", str(cfg), "--metrics-port", str(port)],
                            cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert health.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
