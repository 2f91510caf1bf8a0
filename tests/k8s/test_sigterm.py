"""SIGTERM, as the kubelet sends it: readiness drops first, the port closes last.

A real ``python -m harness_pool serve`` process holds one stage open (a Beam
pipeline gated in its DoFn), so the drain takes ``--drain-timeout``. After
SIGTERM the health service must report NOT_SERVING (seen on a Health.Watch
stream and by Check) while the port still answers and the stage's worker is
still alive; then the port closes, the process exits 0, and no worker process
is left.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness_pool.sidecar.cli import fetch_status
from tests.k8s.helpers import NOT_SERVING, SERVING, free_port, probe, wait_for
from tests.k8s.manifests import ROOT
from tests.sidecar.beam_helpers import BackgroundJob
from tests.sidecar_fixtures import pid_alive

DRAIN = 3.0


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _watch(address: str, out: queue.Queue[tuple[float, int]], stop: threading.Event) -> None:
    """Health.Watch on readiness (service ""), each status with its arrival time."""
    channel = grpc.insecure_channel(address)
    try:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""))
        stop_cb = threading.Thread(target=lambda: (stop.wait(), stream.cancel()), daemon=True)
        stop_cb.start()
        for resp in stream:
            out.put((time.monotonic(), resp.status))
    except grpc.RpcError:
        pass
    finally:
        channel.close()


# The runner's data-plane thread (Beam, in this process) fails when the drain ends
# the held stage: expected here, not a leak.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_readiness_drops_before_the_port_closes(tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    log = open(tmp_path / "sidecar.log", "wb")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness_pool", "serve", "--port", str(port), "--workers", "1",
         "--drain-timeout", str(DRAIN), "--stop-grace", "2"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    folder = tmp_path / "gate"
    folder.mkdir()
    job: BackgroundJob | None = None
    stop_watch = threading.Event()
    watcher: threading.Thread | None = None
    pids: set[int] = set()
    try:
        wait_for(lambda: probe(address, "") == SERVING, 90, "the pool warm (readiness)")
        job = BackgroundJob(address, str(folder))
        (stage_pid,) = job.wait_started()
        pids.add(stage_pid)
        # With --workers 1 readiness is down until the replacement is warm.
        wait_for(lambda: probe(address, "") == SERVING, 60, "the replacement warm")
        pids.update(w.pid for w in fetch_status(address).workers if w.pid)
        events: queue.Queue[tuple[float, int]] = queue.Queue()
        watcher = threading.Thread(target=_watch, args=(address, events, stop_watch),
                                   daemon=True)
        watcher.start()
        first = events.get(timeout=10)
        assert first[1] == SERVING, first

        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        at, status = events.get(timeout=DRAIN)
        while status == SERVING:  # a repeat of the last status; NOT_SERVING must follow
            at, status = events.get(timeout=max(0.1, sent + DRAIN - time.monotonic()))
        assert status == NOT_SERVING, status
        assert at - sent < DRAIN, "readiness dropped only after the drain"
        # Readiness is down, yet the port still answers and the stage still runs.
        assert probe(address, "") == NOT_SERVING
        assert probe(address, "liveness") is not None
        assert _port_open(port)
        assert pid_alive(stage_pid), "the stage's worker was stopped before readiness dropped"
        assert proc.poll() is None

        wait_for(lambda: not _port_open(port), DRAIN + 15, "the port to close")
        closed = time.monotonic()
        assert at < closed
        assert closed - sent >= DRAIN * 0.9, "the port closed before the drain ended"
        assert proc.wait(timeout=15) == 0
        pids.update(w for w in _late_pids(tmp_path))
        wait_for(lambda: not any(pid_alive(p) for p in pids), 10, "worker processes gone")
    finally:
        stop_watch.set()
        if job is not None:
            job.release()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        log.close()
        if job is not None:
            job.thread.join(60)
        if watcher is not None:
            watcher.join(10)
        leaked = [p for p in pids if pid_alive(p)]
        for p in leaked:  # only processes this test's sidecar started
            os.kill(p, signal.SIGKILL)
    assert not leaked, f"worker processes left behind: {leaked}"
    assert job is not None and not job.thread.is_alive(), "the gated pipeline never ended"


def _late_pids(tmp_path: Path) -> list[int]:
    """Gate pids (workers that entered the stage), in case a replacement did."""
    return [int(n[4:]) for n in os.listdir(tmp_path / "gate") if n.startswith("pid-")]
