"""Cycles against a real local Flink session cluster (the session ``flink_cluster``).

A streaming PyFlink job keeps a keyed running count and appends every update to
files; a bounded job runs to FINISHED in between. Checks: counts continue across
the savepoint (no reset, no gap, no duplicate), exactly one streaming job runs
at the end, and the same holds when the scheduler process is SIGKILLed at step
boundaries and mid-savepoint and restarted.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from harness_pool.scheduler.backends.flink_rest import FlinkRestBackend
from harness_pool.scheduler.config import load_cycle
from harness_pool.scheduler.runner import KILL_ENV, CycleRunner
from harness_pool.scheduler.store import FileStateStore

pytestmark = [pytest.mark.slow, pytest.mark.flink]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "harness_pool" / "scheduler" / "examples"


def write_cycle(tmp: Path, url: str, **overrides: object) -> Path:
    doc: dict = {
        "name": "test",
        "backend": {"type": "flink-rest", "url": url, "submit_grace": "10s"},
        "state": {"type": "file", "path": str(tmp / "state.json")},
        "savepoints": {"dir": (tmp / "savepoints").as_uri(), "keep": 1, "retries": 1,
                       "retry_backoff": "100ms", "timeout": "60s"},
        "polling": {"error_backoff": "1s"},
        "jobs": {
            "streaming": {"flink_name": "streaming-count",
                          "python": str(EXAMPLES / "streaming_count.py"),
                          "args": [str(tmp / "counts"), "100"]},
            "bounded": {"flink_name": "bounded-words", "python": str(EXAMPLES / "bounded_job.py"),
                        "args": [str(tmp / "bounded.txt")]},
        },
        "steps": [
            {"action": "suspend", "job": "streaming"},
            {"action": "start", "job": "bounded"},
            {"action": "wait", "job": "bounded", "state": "FINISHED", "timeout": "2m"},
            {"action": "resume", "job": "streaming", "timeout": "2m"},
        ],
    }
    doc.update(overrides)
    path = tmp / "cycle.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def read_counts(out: Path) -> list[tuple[int, int, int]]:
    rows = []
    for name in sorted(glob.glob(str(out / "*.csv"))):
        for line in Path(name).read_text().splitlines():
            key, count, n = (int(x) for x in line.split(","))
            rows.append((key, count, n))
    return rows


def assert_counts_continue(out: Path) -> int:
    """Every n exactly once from 0, and per key counts 1, 2, 3, ... in n order."""
    rows = sorted(read_counts(out), key=lambda r: r[2])
    ns = [r[2] for r in rows]
    assert ns == list(range(len(ns))), "a number was lost or processed twice"
    per_key: dict[int, list[int]] = {}
    for key, count, _ in rows:
        per_key.setdefault(key, []).append(count)
    for key, counts in per_key.items():
        assert counts == list(range(1, len(counts) + 1)), f"key {key} counts reset or gapped"
    return len(rows)


def wait_for_counts(out: Path, more_than: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = len(read_counts(out))
        if n > more_than:
            return n
        time.sleep(0.2)
    raise AssertionError(f"streaming job produced no new counts past {more_than}")


def start_streaming(cfg_path: Path, tmp: Path) -> FlinkRestBackend:
    cfg = load_cycle(cfg_path)
    backend = FlinkRestBackend(cfg.backend, cfg.savepoints.dir)
    result = backend.submit(cfg.jobs["streaming"], uuid.uuid4().hex, None, None)
    assert not result.already
    wait_for_counts(tmp / "counts", 20, timeout=120)
    return backend


def running(url: str, name: str) -> list[dict]:
    jobs = requests.get(f"{url}/jobs/overview", timeout=10).json()["jobs"]
    return [j for j in jobs if j["name"] == name and j["state"] == "RUNNING"]


def jobs_since(url: str, name: str, since_ms: float) -> list[str]:
    """States of the jobs named ``name`` started since ``since_ms`` (this test's only)."""
    jobs = requests.get(f"{url}/jobs/overview", timeout=10).json()["jobs"]
    return [j["state"] for j in jobs if j["name"] == name and j["start-time"] >= since_ms]


def test_full_cycle_resumes_streaming_counts_from_the_savepoint(cluster, tmp_path):
    since = time.time() * 1000
    cfg_path = write_cycle(tmp_path, cluster.rest_url)
    start_streaming(cfg_path, tmp_path)
    cfg = load_cycle(cfg_path)
    backend = TimedBackend(cfg.backend, cfg.savepoints.dir)
    runner = CycleRunner(cfg, backend, FileStateStore(cfg.state.path))
    with ReferencePoller(cluster.rest_url) as ref:
        began = time.monotonic()
        state = runner.run_once()
        cycle_seconds = time.monotonic() - began
    last = state.cycles[-1]
    assert last.ok, last.failure
    before = len(read_counts(tmp_path / "counts"))
    wait_for_counts(tmp_path / "counts", before + 20)
    assert_counts_continue(tmp_path / "counts")
    assert len(running(cluster.rest_url, "streaming-count")) == 1
    assert jobs_since(cluster.rest_url, "bounded-words", since) == ["FINISHED"]
    assert (tmp_path / "bounded.txt").read_text().splitlines()[-1] == "a,3"
    flink_own = _flink_own_seconds(ref, backend.requested, backend.jids)
    downtime = last.downtime["streaming"]
    print(f"\nFIGURES cycle={cycle_seconds:.2f}s downtime={downtime:.2f}s "
          f"flink_own={flink_own:.2f}s overhead={downtime - flink_own:.2f}s")
    # The target (scheduler overhead <= 2 s; measured 0.2-0.6 s on a quiet 2-core machine,
    # see docs/scheduler.md) is a speed figure: it belongs to a benchmark, not to a test
    # that CI runs on a busy machine. The test guards the failure mode the target exists
    # for (minutes of polling): well under 2 s + one 5 s back-off step of any sane poller.
    assert downtime - flink_own <= 6.0


class TimedBackend(FlinkRestBackend):
    """Records when each stop and submission was requested and returned (epoch ms)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.requested: dict[str, float] = {}
        self.jids: set[str] = set()
        """The jobs this backend stopped or submitted (the session cluster is shared)."""

    def stop_with_savepoint(self, job, job_id, trigger_id, target_dir):
        self.requested.setdefault("stop", time.time() * 1000)
        self.jids.add(job_id)
        return super().stop_with_savepoint(job, job_id, trigger_id, target_dir)

    def submit(self, job, job_id, savepoint, parallelism):
        self.requested.setdefault(f"submit-{job.name}", time.time() * 1000)
        self.jids.add(job_id)
        result = super().submit(job, job_id, savepoint, parallelism)
        self.requested.setdefault(f"submitted-{job.name}", time.time() * 1000)
        return result


class ReferencePoller:
    """Polls /jobs/overview every 20 ms: when did Flink's REST API first show each state?"""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: dict[tuple[str, str, str], float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            try:
                jobs = requests.get(f"{self.url}/jobs/overview", timeout=5).json()["jobs"]
            except requests.RequestException:
                continue
            now = time.time() * 1000
            for j in jobs:
                self.seen.setdefault((j["name"], j["jid"], j["state"]), now)

    def first(self, name: str, state: str, after: float, jids: set[str]) -> float:
        """When the poller first saw one of ``jids`` (this test's jobs: earlier tests left
        theirs on the shared cluster) named ``name`` in ``state``, at or after ``after``."""
        return min(t for (n, j, s), t in self.seen.items() if j in jids
                   if n == name and s == state and t >= after)

    def __enter__(self) -> ReferencePoller:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _flink_own_seconds(ref: ReferencePoller, requested: dict[str, float],
                       jids: set[str]) -> float:
    """Flink's own share of the downtime, as a 20 ms poller sees it.

    stop request -> REST shows the old job FINISHED; bounded submit request ->
    REST shows it FINISHED; resume submit request -> the run call returned and
    REST shows the new job RUNNING. The rest of the downtime is the scheduler's.
    """
    stop = requested["stop"]
    own = ref.first("streaming-count", "FINISHED", stop, jids) - stop
    own += ref.first("bounded-words", "FINISHED", stop, jids) - requested["submit-bounded"]
    resumed = max(requested["submitted-streaming"],
                  ref.first("streaming-count", "RUNNING", requested["submit-streaming"], jids))
    own += resumed - requested["submit-streaming"]
    return own / 1000.0


# Kill points in cycle order; each run of `scheduler once` dies at the next one.
KILLS_CYCLE_1 = [
    "before-stop@running:0",  # intent (trigger id) persisted, nothing sent
    "after-stop@running:0",  # stop sent, savepoint in flight, not recorded
    "before-submit@running:1",  # boundary: suspend done, bounded not submitted
    "after-submit@running:1",  # bounded submitted, not recorded (no second copy!)
    "before-poll-job@running:2",  # boundary: wait step
    "before-submit@running:3",  # boundary: resume step
]
KILLS_CYCLE_2 = [
    "before-find@running:0",  # boundary: cycle started and saved, nothing asked yet
    "before-poll-savepoint@running:0",  # mid-savepoint
    "before-poll-job@running:0",  # savepoint recorded, job stopping
    "after-submit@running:3",  # streaming resubmitted, not recorded
    "before-dispose@finishing:4",  # boundary: retention
]


def _scheduler(cfg_path: Path, kill_at: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(KILL_ENV, None)
    if kill_at:
        env[KILL_ENV] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "harness_pool", "scheduler", "once", "--config", str(cfg_path)],
        env=env, capture_output=True, text=True, timeout=240,
    )


@pytest.mark.parametrize("kills", [KILLS_CYCLE_1, KILLS_CYCLE_2], ids=["cycle-1", "cycle-2"])
def test_sigkill_at_each_point_then_restart_completes_the_cycle(cluster, tmp_path, kills):
    since = time.time() * 1000
    cfg_path = write_cycle(tmp_path, cluster.rest_url)
    start_streaming(cfg_path, tmp_path)
    state_file = tmp_path / "state.json"
    for point in kills:
        result = _scheduler(cfg_path, point)
        assert result.returncode == -9, f"did not die at {point}: {result.stdout}{result.stderr}"
        json.loads(state_file.read_text())  # never torn
    result = _scheduler(cfg_path, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["ok"]
    assert len(running(cluster.rest_url, "streaming-count")) == 1
    assert jobs_since(cluster.rest_url, "bounded-words", since) == ["FINISHED"], \
        "the bounded job ran more than once"
    before = len(read_counts(tmp_path / "counts"))
    wait_for_counts(tmp_path / "counts", before + 20)
    assert_counts_continue(tmp_path / "counts")
    # A second cycle right after: retention (keep 1) disposes the first savepoint.
    result = _scheduler(cfg_path, None)
    assert result.returncode == 0, result.stdout + result.stderr
    state = json.loads(state_file.read_text())
    assert len(state["history"]) == 1
    assert len(running(cluster.rest_url, "streaming-count")) == 1
    wait_for_counts(tmp_path / "counts", len(read_counts(tmp_path / "counts")) + 10)
    assert_counts_continue(tmp_path / "counts")


def test_savepoint_and_rescale_steps_on_the_real_cluster(cluster, tmp_path):
    """A standalone savepoint, then a rescale to the free slots: the job runs on, wider,
    and every key's count goes on from its value at the savepoint."""
    cfg_path = write_cycle(tmp_path, cluster.rest_url, savepoints={
        "dir": (tmp_path / "savepoints").as_uri(), "keep": 3, "retries": 1,
        "retry_backoff": "100ms", "timeout": "60s"}, steps=[
        {"action": "savepoint", "job": "streaming", "timeout": "60s"},
        {"action": "rescale", "job": "streaming", "parallelism": "free-slots",
         "timeout": "2m"},
    ])
    start_streaming(cfg_path, tmp_path)
    cfg = load_cycle(cfg_path)
    backend = FlinkRestBackend(cfg.backend, cfg.savepoints.dir)
    state = CycleRunner(cfg, backend, FileStateStore(cfg.state.path)).run_once()
    assert state.cycles[-1].ok, state.cycles[-1].failure
    streaming = running(cluster.rest_url, "streaming-count")
    assert len(streaming) == 1
    job = requests.get(f"{cluster.rest_url}/jobs/{streaming[0]['jid']}", timeout=10).json()
    # The job was alone on the cluster: after its stop all 4 slots were free.
    assert max(v["parallelism"] for v in job["vertices"]) == 4
    # Both steps' savepoints were recorded, and both exist on disk.
    recorded = [r for r in state.history if r.job == "streaming"]
    assert len(recorded) == 2 and recorded[0].path != recorded[1].path
    for record in recorded:
        assert os.path.isdir(record.path.removeprefix("file:")), record.path
    before = len(read_counts(tmp_path / "counts"))
    wait_for_counts(tmp_path / "counts", before + 40)
    # After the rescale two source readers feed each key, so a key's elements may
    # arrive out of n order; what must hold: no number twice, and per key the counts
    # are exactly 1..N (no reset to 1, no gap, no repeat).
    rows = read_counts(tmp_path / "counts")
    ns = [n for _, _, n in rows]
    assert len(ns) == len(set(ns)), "a number was processed twice"
    per_key: dict[int, list[int]] = {}
    for key, count, _ in rows:
        per_key.setdefault(key, []).append(count)
    for key, counts in per_key.items():
        assert sorted(counts) == list(range(1, len(counts) + 1)), f"key {key} reset or gapped"
