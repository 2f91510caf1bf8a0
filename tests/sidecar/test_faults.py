"""Faults: a worker killed mid-bundle, a runner that vanishes, a clean stop."""

from __future__ import annotations

import os
import signal
import threading
import time

import apache_beam as beam
import grpc
from apache_beam.testing.util import assert_that, equal_to

from harness_pool.pool.core import WorkerState
from tests.sidecar.beam_helpers import BackgroundJob, run
from tests.sidecar_fixtures import pid_alive


def test_kill_9_mid_bundle_fails_the_job_and_the_pool_recovers(sidecar_factory, tmp_path) -> None:
    sidecar = sidecar_factory(workers=1)
    job = BackgroundJob(sidecar.address, str(tmp_path))
    (pid,) = job.wait_started()
    os.kill(pid, signal.SIGKILL)
    job.join(60)
    assert job.error is not None, "the runner did not notice its worker died"
    records = {a.pid: a for a in sidecar.status().assignments}
    assert records[pid].outcome == "failed"
    assert "-9" in records[pid].detail
    # The pool replaced the worker and the next job runs on a fresh process.
    assert sidecar.wait_warm(1, timeout=60)
    run(sidecar.address, lambda p: assert_that(
        p | beam.Create([1, 2]) | beam.Map(lambda x: x * 10), equal_to([10, 20])))
    assert sidecar.pool.wait_until_no_stage(30)  # the worker's Finished lands after run()
    assert sidecar.status().assignments[0].outcome == "finished"
    assert sidecar.status().assignments[0].pid != pid


def test_stage_whose_runner_vanished_is_recycled(sidecar_factory) -> None:
    """A runner that dies without StopWorker: the control stream closes, the worker goes."""
    from concurrent import futures

    from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, endpoints_pb2
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer  # noqa: F401

    # A minimal runner: a control server that accepts one harness, then dies.
    connected = threading.Event()

    class Control(beam_fn_api_pb2_grpc.BeamFnControlServicer):
        def Control(self, request_iterator, context):
            connected.set()
            while context.is_active() and not stopped.is_set():
                time.sleep(0.05)
            return iter(())

    stopped = threading.Event()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    beam_fn_api_pb2_grpc.add_BeamFnControlServicer_to_server(Control(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sidecar = sidecar_factory(workers=1)
    try:
        with grpc.insecure_channel(sidecar.address) as channel:
            response = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel).StartWorker(
                beam_fn_api_pb2.StartWorkerRequest(
                    worker_id="vanishing-1",
                    control_endpoint=endpoints_pb2.ApiServiceDescriptor(url=f"127.0.0.1:{port}")),
                timeout=60)
        assert response.error == ""
        assert connected.wait(10)
        holder = sidecar.core.holder_of("vanishing-1")
        assert holder is not None and holder.state is WorkerState.BUSY
        pid = holder.pid
    finally:
        stopped.set()
        server.stop(0).wait()  # the runner is gone; no StopWorker ever comes
    deadline = time.monotonic() + 30
    while (pid_alive(pid) or sidecar.core.holder_of("vanishing-1")) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid), "the worker of a vanished runner is still running"
    assert sidecar.core.holder_of("vanishing-1") is None, "its stage was never released"
    assert sidecar.wait_warm(1, timeout=60)


def test_stop_worker_ends_the_process(sidecar_factory, tmp_path) -> None:
    from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc

    sidecar = sidecar_factory(workers=1)
    job = BackgroundJob(sidecar.address, str(tmp_path))
    (pid,) = job.wait_started()
    runner_id = sidecar.status().assignments[0].runner_worker_id
    with grpc.insecure_channel(sidecar.address) as channel:
        response = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel).StopWorker(
            beam_fn_api_pb2.StopWorkerRequest(worker_id=runner_id), timeout=10)
    assert response.error == ""
    job.join(60)
    assert not pid_alive(pid)
    assert sidecar.status().assignments[0].outcome in ("stopped", "failed")


def test_sidecar_stop_leaves_no_process_thread_or_port(sidecar_factory) -> None:
    import socket

    before = {t.ident for t in threading.enumerate()}
    sidecar = sidecar_factory(workers=2, metrics_port=0)
    run(sidecar.address, lambda p: assert_that(p | beam.Create([1]), equal_to([1])))
    pids = [w.pid for w in sidecar.status().workers]
    port = int(sidecar.address.rsplit(":", 1)[1])
    sidecar.stop()
    assert not [p for p in pids if pid_alive(p)]
    deadline = time.monotonic() + 10
    leftover = []
    while time.monotonic() < deadline:
        leftover = [t for t in threading.enumerate()
                    if t.ident not in before and t.name.startswith("hp-") and t.is_alive()]
        if not leftover:
            break
        time.sleep(0.05)
    assert not leftover, f"threads left behind: {[t.name for t in leftover]}"
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # the port is free again
