"""A worker's leaving never hangs: Beam's Fn API log handler against a runner that vanishes.

The deadlock (issue 13, found with gdb on workers of a SIGKILLed TaskManager):
``FnApiLogRecordHandler.close()`` takes the handler's lock and joins its reader
thread; the reader, seeing the logging stream broken, prints to stderr, which
PyFlink's redirection turns into ``logging.error``, which needs the same lock.

``LOGGING_SCRIPT`` reproduces it deterministically with the real handler and a real
gRPC logging server: the server keeps the stream open after the worker half-closes
it (so ``close()`` waits in its join, holding the lock), then the server dies (the
runner vanishes) and the reader prints. The old way of leaving (``close()`` with the
redirection in place) hangs; ``end_logging`` returns.
"""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from harness_pool.pool.worker import describe_error

LOGGING_SCRIPT = r"""
import logging, os, sys, threading, time
from concurrent import futures
import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc, endpoints_pb2
from apache_beam.runners.worker.log_handler import FnApiLogRecordHandler
from harness_pool.pool import worker

class Logging(beam_fn_api_pb2_grpc.BeamFnLoggingServicer):
    def Logging(self, request_iterator, context):
        for _ in request_iterator:  # until the worker half-closes the stream
            pass
        threading.Event().wait()  # ...and never answer: close() waits, holding its lock
        yield

server = grpc.server(futures.ThreadPoolExecutor(4))
beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(Logging(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
worker.setup_logging("worker-1")
stdio = worker._pyflink_stdio()  # as serve_assignment does for the pyflink flavour
handler = FnApiLogRecordHandler(endpoints_pb2.ApiServiceDescriptor(url=f"127.0.0.1:{port}"))
logging.getLogger().addHandler(handler)  # as sdk_worker_main.create_harness does
logging.info("a record for the runner")
threading.Timer(1.0, lambda: server.stop(0)).start()  # the runner vanishes
t0 = time.monotonic()
if sys.argv[1] == "old":
    handler.close()
    stdio.close()
    closed = True
else:
    closed = worker.end_logging(handler, stdio, timeout=float(sys.argv[2]))
os.write(1, f"left after {time.monotonic() - t0:.1f}s closed={closed}\n".encode())
worker.exit_now(0)
"""


def _leave(how: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LOGGING_SCRIPT, how, "3"], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_end_logging_leaves_when_the_runner_vanishes_during_close() -> None:
    out = _leave("new", timeout=60)
    assert out.returncode == 0, out.stderr
    assert "left after" in out.stdout, out.stdout + out.stderr
    assert "Logging client failed" in out.stderr, "the reader's print reached stderr, not a lock"


@pytest.mark.slow
def test_the_old_way_of_leaving_deadlocks() -> None:
    """The reproduction is real: closing the handler with the redirection in place hangs
    (this is what kept 6 of 8 workers of a killed TaskManager busy for good)."""
    with pytest.raises(subprocess.TimeoutExpired):
        _leave("old", timeout=10)


class _Rpc(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "Socket closed"

    def __str__(self) -> str:
        return "<_MultiThreadedRendezvous of RPC that terminated with:\n\tstatus = ...\n>"


@pytest.mark.parametrize(("exc", "expected"), [
    pytest.param(_Rpc(), "gRPC UNAVAILABLE: Socket closed", id="grpc-error"),
    pytest.param(ValueError("bad value\nmore lines\n>"), "ValueError: bad value", id="multiline"),
    pytest.param(RuntimeError(), "RuntimeError", id="no-message"),
    pytest.param(KeyError("k"), "KeyError: 'k'", id="key-error"),
])
def test_describe_error_is_one_line_with_type_and_message(exc: BaseException, expected: str
                                                          ) -> None:
    assert describe_error(exc) == expected


def test_describe_error_is_bounded() -> None:
    text = describe_error(ValueError("x" * 5000), limit=200)
    assert len(text) <= 200 and text.startswith("ValueError: xxx") and "\n" not in text
