"""The long-running loop (schedule, requests between cycles), /metrics and /healthz."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from prometheus_client import generate_latest

from harness_pool.flink.local_cluster import free_port
from harness_pool.scheduler import metrics as m
from harness_pool.scheduler.model import CycleState, Request, RequestKind, SavepointRecord
from harness_pool.scheduler.runner import CycleRunner, SystemClock
from harness_pool.scheduler.store import FileStateStore
from harness_pool.testing.fake_backend import FakeBackend, FakeClock

from .helpers import cycle, with_streaming


class StoppingClock(FakeClock):
    """Sets ``stop`` once fake time passes ``until``."""

    def __init__(self, stop: threading.Event, until: float) -> None:
        super().__init__()
        self.stop, self.until = stop, self.t + until

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.t >= self.until:
            self.stop.set()


def test_run_forever_runs_a_cycle_each_interval(tmp_path):
    stop = threading.Event()
    clock = StoppingClock(stop, until=2 * 3600 - 60)
    cfg = cycle(tmp_path, schedule={"every": "1h"})
    runner = CycleRunner(cfg, with_streaming(FakeBackend()), FileStateStore(cfg.state.path),
                         clock=clock, kill_at="")
    runner.run_forever(stop)
    state = runner.state()
    assert len(state.cycles) == 2
    assert 3600 <= state.cycles[1].started_at - state.cycles[0].started_at < 3700


def test_requests_run_between_cycles_and_do_not_move_the_schedule(tmp_path):
    stop = threading.Event()
    clock = StoppingClock(stop, until=600)
    cfg = cycle(tmp_path, schedule={"every": "1h"})
    store = FileStateStore(cfg.state.path)
    backend = with_streaming(FakeBackend())
    runner = CycleRunner(cfg, backend, store, clock=clock, kill_at="")
    store.submit(Request("r1", RequestKind.SAVEPOINT, job="streaming"))
    runner.run_forever(stop)
    state = runner.state()
    assert [c.kind.value for c in state.cycles] == ["MANUAL", "SCHEDULED"]
    (req,) = state.requests
    assert req.status.value == "DONE" and req.result == state.history[0].path
    assert not list(store.requests.glob("*.json")), "consumed from the inbox"
    text = generate_latest(runner.metrics.registry).decode()
    assert 'harness_pool_scheduler_requests_total{action="savepoint",result="ok"} 1.0' in text


def test_failed_cycle_counts_as_failed_and_savepoint_time_is_exported(tmp_path):
    cfg = cycle(tmp_path)
    store = FileStateStore(cfg.state.path)
    store.save(CycleState(history=[SavepointRecord("streaming", "file:/sp/old", 1234.5, "c0")]))
    runner = CycleRunner(cfg, FakeBackend(), store, clock=FakeClock(), kill_at="")
    runner.state()
    text = generate_latest(runner.metrics.registry).decode()
    assert 'harness_pool_scheduler_last_savepoint_timestamp_seconds{job="streaming"} 1234.5' \
        in text, "known at startup, from the state"
    runner.run_once()  # no streaming job: the cycle fails
    text = generate_latest(runner.metrics.registry).decode()
    assert 'harness_pool_scheduler_cycles_total{cycle="t",result="failed"} 1.0' in text
    ok = CycleRunner(cfg, with_streaming(FakeBackend()), store, clock=FakeClock(2e6),
                     kill_at="")
    state = ok.run_once()
    newest = ok.metrics.registry.get_sample_value(
        "harness_pool_scheduler_last_savepoint_timestamp_seconds", {"job": "streaming"})
    assert newest == state.history[-1].taken_at > 1234.5


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


def test_healthz_stays_green_through_a_long_step_and_goes_red_when_stuck(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(m, "BEAT_EVERY", 0.1)
    metrics = m.SchedulerMetrics()
    port = free_port()
    server = m.serve(metrics, port, stale_after=0.5, host="127.0.0.1")
    url = f"http://127.0.0.1:{port}/healthz"
    seen: list[int] = []
    try:
        cfg = cycle(tmp_path, steps=[{"action": "sleep", "duration": "2s"}])
        runner = CycleRunner(cfg, FakeBackend(), FileStateStore(cfg.state.path),
                             clock=SystemClock(), metrics=metrics, kill_at="")
        thread = threading.Thread(target=runner.run_once)
        metrics.beat()
        thread.start()
        while thread.is_alive():
            seen.append(requests.get(url, timeout=5).status_code)
            time.sleep(0.1)
        thread.join()
        assert seen and set(seen) == {200}, seen
        with metrics.hold(0.3):  # a call that overruns its bound: the beat stops
            time.sleep(1.2)
            assert requests.get(url, timeout=5).status_code == 503
    finally:
        server.shutdown()
        server.server_close()
    assert runner.state().cycles[-1].ok


def test_scheduler_run_serves_health_and_stops_on_sigterm(tmp_path):
    import signal
    import subprocess
    import sys
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
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert "harness_pool_scheduler_leader 1.0" in text, "it holds the state file's lock"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("second", ["once", "run"])
def test_a_second_scheduler_on_the_same_state_file_does_not_act(tmp_path, second):
    """The file store's lock: only one process acts on a state file."""
    from harness_pool.scheduler.leader import FileLock

    first = FileLock(tmp_path / "state.json", "first")
    assert first.try_acquire()
    try:
        other = FileLock(tmp_path / "state.json", "second")
        assert not other.try_acquire() and other.holder() == "first"
    finally:
        first.release()
    assert FileLock(tmp_path / "state.json", "third").try_acquire()
