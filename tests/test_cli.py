"""The harness-pool command: --help everywhere, serve under SIGTERM, status."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness_pool.cli import build_parser
from tests.sidecar_fixtures import pid_alive

HP = [sys.executable, "-m", "harness_pool"]


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


@pytest.mark.parametrize("command", ["", *_subcommands()])
def test_help(command: str) -> None:
    out = subprocess.run([*HP, *([command] if command else []), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage: harness-pool" in out.stdout


def test_core_subcommands_present() -> None:
    assert {"serve", "status", "demo"} <= set(_subcommands())


def test_serve_rejects_bad_flags_naming_them() -> None:
    out = subprocess.run([*HP, "serve", "--port", "0", "--workers", "-1", "--id-prefix", "bad id"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--workers: -1" in out.stderr and "--id-prefix: 'bad id'" in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2).status


def test_serve_status_and_graceful_sigterm() -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen([*HP, "serve", "--port", str(port), "--workers", "2"],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if _health(address) == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "sidecar never became SERVING"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        assert _health(address, "liveness") == health_pb2.HealthCheckResponse.SERVING
        table = subprocess.run([*HP, "status", "--address", address],
                               capture_output=True, text=True, timeout=60)
        assert table.returncode == 0, table.stderr
        assert "POOL ID" in table.stdout and "idle" in table.stdout
        raw = subprocess.run([*HP, "status", "--address", address, "--json"],
                             capture_output=True, text=True, timeout=60)
        status = json.loads(raw.stdout)
        pids = [w["pid"] for w in status["workers"]]
        assert len(pids) == 2 and all(w["state"] == "idle" for w in status["workers"])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "shutting down" in err and "sidecar stopped" in err
        assert not [p for p in pids if pid_alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_status_of_absent_sidecar_names_the_address() -> None:
    address = f"127.0.0.1:{_free_port()}"
    out = subprocess.run([*HP, "status", "--address", address, "--timeout", "1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert address in out.stderr


def test_status_table_shows_external_workers_and_bytes_forwarded() -> None:
    from harness_pool.sidecar.cli import format_table
    from harness_pool.v1 import pool_pb2

    status = pool_pb2.PoolStatus(address="127.0.0.1:50000", serving=True, workers=[
        pool_pb2.WorkerStatus(pool_id="worker-1", kind="pooled", state="idle", pid=10,
                              connected=True),
        pool_pb2.WorkerStatus(pool_id="sdk-1", kind="external", state="busy",
                              runner_worker_id="2-1", connected=True, bytes_forwarded=1536),
        pool_pb2.WorkerStatus(pool_id="sdk-2", kind="external", state="disconnected"),
    ])
    lines = format_table(status).splitlines()
    assert "CONNECTED" in lines[1] and "FORWARDED" in lines[1]
    sdk1 = next(line for line in lines if line.startswith("sdk-1"))
    assert "2-1" in sdk1 and "yes" in sdk1 and "1.5KiB" in sdk1
    sdk2 = next(line for line in lines if line.startswith("sdk-2"))
    assert " no " in sdk2 and " 0B" in sdk2
