"""Chaos: pipelines keep running while random workers, the fork server and stages'
runners are killed at random moments; afterwards every worker the status lists is a
live process, nothing leaked, and the next pipeline succeeds."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.sidecar.beam_helpers import run
from tests.sidecar_fixtures import pid_alive

CHAOS_SECONDS = 75

# Pipelines run in their own processes: Beam's FnApiRunner can wait forever for a
# worker killed mid-bundle (it does not watch the control stream), which is the
# runner's affair; a hung loop is killed at the end like any runner.
LOOP_SCRIPT = """
import sys, time
import apache_beam as beam
from apache_beam.runners.portability import fn_api_runner
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import environments

until = time.monotonic() + float(sys.argv[2])
while time.monotonic() < until:
    try:
        r = fn_api_runner.FnApiRunner(
            default_environment=environments.ExternalEnvironment(sys.argv[1]))
        with beam.Pipeline(runner=r) as p:
            out = (p | beam.Create(["a b", "b c", "c"]) | beam.FlatMap(str.split)
                   | beam.Map(lambda w: (w, 1)) | beam.CombinePerKey(sum))
            assert_that(out, equal_to([("a", 1), ("b", 2), ("c", 2)]))
        print("ok", flush=True)
    except Exception:
        print("failed", flush=True)
"""

RUNNER_SCRIPT = """
import sys, time
import apache_beam as beam
from apache_beam.runners.portability import fn_api_runner
from apache_beam.transforms import environments

def slow(x):
    time.sleep(3)
    return x

r = fn_api_runner.FnApiRunner(default_environment=environments.ExternalEnvironment(sys.argv[1]))
with beam.Pipeline(runner=r) as p:
    _ = p | beam.Create([1, 2]) | beam.Map(slow)
"""


def _shape(p: beam.Pipeline) -> None:
    out = (p | beam.Create(["a b", "b c", "c"]) | beam.FlatMap(str.split)
           | beam.Map(lambda w: (w, 1)) | beam.CombinePerKey(sum))
    assert_that(out, equal_to([("a", 1), ("b", 2), ("c", 2)]))


@pytest.mark.slow
def test_chaos(sidecar_factory) -> None:
    seed = int(os.environ.get("CHAOS_SEED", time.time()))
    rng = random.Random(seed)
    before = {t.ident for t in threading.enumerate()}
    sidecar = sidecar_factory(workers=3, stop_grace=1.0, drain_timeout=2.0, start_timeout=20,
                              assign_timeout=20)
    launcher = sidecar._owned_launcher
    seen_pids: set[int] = set()
    runners: list[subprocess.Popen[bytes]] = []
    actions = {"worker": 0, "fork_server": 0, "runner": 0}
    loops = [subprocess.Popen([sys.executable, "-c", LOOP_SCRIPT, sidecar.address,
                               str(CHAOS_SECONDS)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL) for _ in range(2)]
    deadline = time.monotonic() + CHAOS_SECONDS
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.5, 2.5))
            workers = [w for w in sidecar.status().workers if w.pid and w.state != "exited"]
            seen_pids.update(w.pid for w in workers)
            action = rng.choice(["worker", "worker", "fork_server", "runner"])
            if action == "worker" and workers:
                victim = rng.choice(workers)
                _kill(victim.pid)
            elif action == "fork_server" and launcher.zygote_pid:
                seen_pids.add(launcher.zygote_pid)
                _kill(launcher.zygote_pid)
            elif action == "runner":
                proc = subprocess.Popen([sys.executable, "-c", RUNNER_SCRIPT, sidecar.address],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                runners.append(proc)
                time.sleep(rng.uniform(0.0, 4.0))  # in StartWorker, mid-bundle or after
                _kill(proc.pid)
                proc.wait(30)
            actions[action] += 1
    finally:
        outputs = []
        for loop in loops:
            try:
                out, _ = loop.communicate(timeout=20)
            except subprocess.TimeoutExpired:  # a pipeline the runner never finished
                loop.kill()
                out, _ = loop.communicate(timeout=30)
            outputs.append(out.decode())
        for proc in runners:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    results = {k: sum(o.split().count(k) for o in outputs) for k in ("ok", "failed")}
    assert results["ok"] > 0, f"no pipeline succeeded during the chaos: {results}, {actions}"

    # Afterwards: the pool recovers to warm, every listed worker is a live process.
    assert sidecar.wait_warm(timeout=120), sidecar.status()
    deadline = time.monotonic() + 60
    while True:
        listed = [w for w in sidecar.status().workers if w.state != "exited"]
        ghosts = [(w.pool_id, w.pid, w.state) for w in listed if not pid_alive(w.pid)]
        if not ghosts:
            break
        assert time.monotonic() < deadline, f"status lists dead workers: {ghosts}"
        time.sleep(0.2)
    assert len(listed) <= sidecar.settings.process_cap
    run(sidecar.address, _shape)  # the next pipeline succeeds
    sidecar.stop()
    seen_pids.update(w.pid for w in listed)
    leaked = [p for p in seen_pids if pid_alive(p)]
    assert not leaked, f"processes left behind: {leaked} ({actions}, CHAOS_SEED={seed})"
    assert launcher.helper_pids() == set()
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("hp-")
                and t.is_alive() and t.ident not in before]
    assert not leftover, f"threads left behind: {leftover}"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
