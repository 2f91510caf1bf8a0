"""Orphans of user code: the sidecar as PID 1 of a container reaps what it adopts.

The sidecar runs as ``harness-pool serve`` in a process that is a child subreaper
from the start (set by a tiny wrapper before exec), exactly like PID 1 in a
container: every orphan below it is re-parented to it. 200 stages each run a DoFn
that starts processes and never waits for them; halfway, the fork server is
killed (its workers are adopted by the sidecar). Afterwards no zombie is left
below the sidecar.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import apache_beam as beam
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import descendants, proc_state
from harness_pool.flink.local_cluster import free_port
from tests.sidecar.beam_helpers import run
from tests.sidecar_fixtures import pid_alive

STAGES = 200
SUBREAPER_EXEC = ("import ctypes, os, sys; ctypes.CDLL(None).prctl(36, 1, 0, 0, 0); "
                  "os.execv(sys.argv[1], sys.argv[1:])")


def leave_orphans(x: int) -> int:
    import subprocess

    subprocess.Popen(["true"])  # exits at once: a zombie of this worker until it exits
    subprocess.Popen(["sleep", "0.3"])  # outlives this worker: an orphan, then a zombie
    return x


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2).status == 1
        except grpc.RpcError:
            return False


def _zombies_below(pid: int) -> list[int]:
    return [p for p in descendants(pid) if proc_state(p) == "Z"]


@pytest.mark.slow
def test_no_zombie_after_200_stages_that_leave_orphans() -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    serve = str(Path(sys.executable).with_name("harness-pool"))
    sidecar = subprocess.Popen([sys.executable, "-c", SUBREAPER_EXEC, serve, "serve",
                                "--port", str(port), "--workers", "2", "--stop-grace", "2",
                                "--drain-timeout", "2"])
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while not _serving(address):
            assert sidecar.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        done = {"n": 0}
        lock = threading.Lock()

        def stages(n: int) -> None:
            for _ in range(n):
                run(address, lambda p: p | beam.Create([1]) | beam.Map(leave_orphans))
                with lock:
                    done["n"] += 1

        threads = [threading.Thread(target=stages, args=(STAGES // 2,)) for _ in range(2)]
        for t in threads:
            t.start()
        while done["n"] < STAGES // 2 and any(t.is_alive() for t in threads):
            time.sleep(0.2)
        zygotes = [p for p in descendants(sidecar.pid)  # workers share its argv: pick by parent
                   if b"harness_pool.pool.forkserver" in _cmdline(p) and _ppid(p) == sidecar.pid]
        assert len(zygotes) == 1, zygotes
        for z in zygotes:
            os.kill(z, signal.SIGKILL)  # its workers and their orphans go to the sidecar
        for t in threads:
            t.join(600)
        assert done["n"] == STAGES
        seen.update(descendants(sidecar.pid))
        deadline = time.monotonic() + 20
        while _zombies_below(sidecar.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        zombies = _zombies_below(sidecar.pid)
        assert zombies == [], f"{len(zombies)} zombies below the sidecar after {STAGES} stages"
    finally:
        sidecar.send_signal(signal.SIGTERM)
        code = sidecar.wait(60)
    assert code == 0
    assert not [p for p in seen if pid_alive(p)], "processes left behind after shutdown"


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0
    return int(raw[raw.rfind(b")") + 2:].split()[1])


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
