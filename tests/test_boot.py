"""harness-pool-python: the fast loopback boot, byte-compatible with PyFlink's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.portability.api import beam_fn_api_pb2

from harness_pool.boot import decode_error, encode_start_worker, parse_boot_args

SHIM = str(Path(sys.executable).with_name("harness-pool-python"))


def test_request_bytes_parse_as_beams_start_worker_request() -> None:
    params = {"PYTHONPATH": "/a:/b", "_PYTHON_WORKING_DIR": "/w", "EMPTY": "", "UTF": "é✓"}
    raw = encode_start_worker("3-1", "localhost:40000", params)
    request = beam_fn_api_pb2.StartWorkerRequest.FromString(raw)
    assert request.worker_id == "3-1"
    assert request.provision_endpoint.url == "localhost:40000"
    assert dict(request.params) == params
    assert not request.HasField("control_endpoint")


@pytest.mark.parametrize("error", ["", "no idle worker within 30s", "x" * 300])
def test_response_error_decodes(error: str) -> None:
    raw = beam_fn_api_pb2.StartWorkerResponse(error=error).SerializeToString()
    assert decode_error(raw) == error


@pytest.mark.parametrize("args", [
    ["--id=1-1", "--provision_endpoint=h:1", "--semi_persist_dir=/s"],
    ["--id", "1-1", "--provision_endpoint", "h:1", "--semi_persist_dir", "/s"],
], ids=["equals", "separate"])
def test_boot_args_both_forms(args: list[str]) -> None:
    assert parse_boot_args(args) == {"id": "1-1", "provision_endpoint": "h:1",
                                     "semi_persist_dir": "/s"}


def test_boot_against_a_real_sidecar_reports_its_error(sidecar_factory) -> None:
    sidecar = sidecar_factory(workers=1)
    env = dict(os.environ, PYTHON_LOOPBACK_SERVER_ADDRESS=sidecar.address)
    out = subprocess.run([SHIM, "-m", "pyflink.fn_execution.beam.beam_boot", "--id", "7-1",
                          "--provision_endpoint", "127.0.0.1:1"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "stage 7-1: provision endpoint 127.0.0.1:1" in out.stderr
    assert sidecar.pool.counts()["idle"] == 1  # nothing was consumed


def test_boot_names_an_absent_sidecar() -> None:
    env = dict(os.environ, PYTHON_LOOPBACK_SERVER_ADDRESS="127.0.0.1:1")
    out = subprocess.run([SHIM, "-m", "pyflink.fn_execution.beam.beam_boot", "--id", "1-1",
                          "--provision_endpoint", "127.0.0.1:2"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "sidecar at 127.0.0.1:1" in out.stderr and "UNAVAILABLE" in out.stderr


def test_anything_else_runs_the_real_interpreter() -> None:
    out = subprocess.run([SHIM, "-c", "import sys; print(sys.argv[1:])", "a", "b"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "['a', 'b']"


def test_boot_gives_up_after_its_deadline_on_a_sidecar_that_never_answers() -> None:
    """A StartWorker handler that never returns: the boot must not hang the stage."""
    import threading
    from concurrent import futures

    import grpc

    release = threading.Event()

    def never(request, context):
        release.wait(60)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "org.apache.beam.model.fn_execution.v1.BeamFnExternalWorkerPool",
        {"StartWorker": grpc.unary_unary_rpc_method_handler(never)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        env = dict(os.environ, PYTHON_LOOPBACK_SERVER_ADDRESS=f"127.0.0.1:{port}",
                   HARNESS_POOL_BOOT_TIMEOUT="2")
        out = subprocess.run([SHIM, "-m", "pyflink.fn_execution.beam.beam_boot", "--id", "1-1",
                              "--provision_endpoint", "127.0.0.1:2"],
                             env=env, capture_output=True, text=True, timeout=60)
    finally:
        release.set()
        server.stop(0)
    assert out.returncode == 1
    assert "DEADLINE_EXCEEDED" in out.stderr


def test_boot_survives_non_utf8_environment_values(sidecar_factory) -> None:
    sidecar = sidecar_factory(workers=1)
    env = {k.encode(): v.encode() for k, v in os.environ.items()}
    env[b"PYTHON_LOOPBACK_SERVER_ADDRESS"] = sidecar.address.encode()
    env[b"LATIN1_VALUE"] = b"caf\xe9"
    out = subprocess.run([SHIM, "-m", "pyflink.fn_execution.beam.beam_boot", "--id", "8-1",
                          "--provision_endpoint", "127.0.0.1:1"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    assert "LATIN1_VALUE" in out.stderr  # named as left out
    assert "stage 8-1: provision endpoint 127.0.0.1:1" in out.stderr  # the sidecar answered
    assert sidecar.pool.counts()["idle"] == 1
