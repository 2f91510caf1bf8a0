"""Bad input gets a clear error naming what is at fault, and the sidecar keeps serving."""

from __future__ import annotations

import socket

import apache_beam as beam
import grpc
import pytest
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, endpoints_pb2
from apache_beam.testing.util import assert_that, equal_to

from harness_pool.flink.local_cluster import free_port
from harness_pool.sidecar.server import Sidecar
from harness_pool.sidecar.settings import SidecarSettings
from harness_pool.v1 import pool_pb2, pool_pb2_grpc
from tests.sidecar.beam_helpers import BackgroundJob, run
from tests.sidecar_fixtures import pid_alive


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(address: str, **fields) -> beam_fn_api_pb2.StartWorkerResponse:
    with grpc.insecure_channel(address) as channel:
        return beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel).StartWorker(
            beam_fn_api_pb2.StartWorkerRequest(**fields), timeout=30)


def _url(url: str) -> endpoints_pb2.ApiServiceDescriptor:
    return endpoints_pb2.ApiServiceDescriptor(url=url)


CASES = [
    pytest.param(dict(control_endpoint=_url("127.0.0.1:1")), "worker_id is empty",
                 id="empty-worker-id"),
    pytest.param(dict(worker_id="s-1"), "neither control_endpoint nor provision_endpoint",
                 id="missing-endpoints"),
    pytest.param(dict(worker_id="s-2", provision_endpoint=_url("CLOSED")),
                 "provision endpoint 127.0.0.1:", id="unreachable-provision"),
    pytest.param(dict(worker_id="s-3", control_endpoint=_url("127.0.0.1:1"),
                      params={"NOT=A NAME": "x"}), "params name 'NOT=A NAME'",
                 id="garbage-param-key"),
    pytest.param(dict(worker_id="s-4", control_endpoint=_url("127.0.0.1:1"),
                      params={"_PYTHON_WORKING_DIR": "/nonexistent/dir"}),
                 "'/nonexistent/dir' is not a directory", id="missing-working-dir"),
    pytest.param(dict(worker_id="s-5", control_endpoint=_url("127.0.0.1:1"),
                      params={"X": "a\x00b"}), "NUL byte", id="nul-in-param"),
    pytest.param(dict(worker_id="s-6", control_endpoint=_url("127.0.0.1:1"),
                      params={"HUGE": "x" * (1 << 20)}),
                 "params['HUGE'] is 1048582 bytes; an environment entry holds at most 131072",
                 id="huge-param-value"),
    pytest.param(dict(worker_id="w" * 300, control_endpoint=_url("127.0.0.1:1")),
                 "worker_id is 300 characters; at most 256", id="long-worker-id"),
    pytest.param(dict(worker_id="s-7\nFAKE LOG LINE", control_endpoint=_url("127.0.0.1:1")),
                 "worker 's-7\\x0aFAKE LOG LINE': worker_id must be printable ASCII",
                 id="newline-in-worker-id"),
    pytest.param(dict(worker_id="s-8", control_endpoint=_url("127.0.0.1:1"),
                      params={f"BAD={i}": "v" for i in range(5000)}), "and 4996 more problems",
                 id="error-text-stays-bounded"),
]


@pytest.fixture(scope="module")
def shared_sidecar():
    sidecar = Sidecar(SidecarSettings(port=0, workers=1, start_timeout=5, drain_timeout=1,
                                      stop_grace=1, admin_address=f"127.0.0.1:{free_port()}"))
    sidecar.start()
    try:
        assert sidecar.wait_warm(timeout=90)
        yield sidecar
    finally:
        pids = [w.pid for w in sidecar.status().workers if w.pid]
        sidecar.stop()
        assert not [p for p in pids if pid_alive(p)]


@pytest.mark.parametrize("fields,expected", CASES)
def test_start_worker_refuses_with_a_clear_error(shared_sidecar: Sidecar, fields, expected) -> None:
    if fields.get("provision_endpoint") and fields["provision_endpoint"].url == "CLOSED":
        fields = dict(fields, provision_endpoint=_url(f"127.0.0.1:{_closed_port()}"))
    response = _start(shared_sidecar.address, **fields)
    assert expected in response.error
    assert len(response.error) <= 2048
    if fields.get("worker_id") and fields["worker_id"].isprintable() \
            and len(fields["worker_id"]) < 100:
        assert fields["worker_id"] in response.error
    # nothing was consumed: the warm worker is still there and idle
    assert shared_sidecar.pool.counts()["idle"] == 1


def test_unreachable_control_endpoint_fails_within_start_timeout(shared_sidecar: Sidecar) -> None:
    response = _start(shared_sidecar.address, worker_id="s-9",
                      control_endpoint=_url(f"127.0.0.1:{_closed_port()}"))
    assert "s-9" in response.error
    assert "control" in response.error or "failed to start" in response.error
    assert shared_sidecar.wait_warm(1, timeout=60)


def _attach(address: str, metadata) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        stub = pool_pb2_grpc.WorkerRegistryStub(channel)
        events = iter([pool_pb2.WorkerEvent(hello=pool_pb2.Hello(pid=1))])
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Attach(events, metadata=metadata, timeout=10))
        return info.value


def test_unknown_pool_id_is_refused_by_name(shared_sidecar: Sidecar) -> None:
    err = _attach(shared_sidecar.worker_address, (("worker_id", "intruder-7"),))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "intruder-7" in err.details()


def test_attach_without_worker_id_header(shared_sidecar: Sidecar) -> None:
    err = _attach(shared_sidecar.worker_address, ())
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "worker_id" in err.details()


def test_second_attach_with_a_live_id_is_refused(shared_sidecar: Sidecar) -> None:
    live = next(w for w in shared_sidecar.status().workers if w.state == "idle")
    err = _attach(shared_sidecar.worker_address, (("worker_id", live.pool_id),))
    assert err.code() in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED)
    assert live.pool_id in err.details()


def test_recycle_unknown_worker_is_not_found(shared_sidecar: Sidecar) -> None:
    with grpc.insecure_channel(shared_sidecar.settings.admin_address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pool_pb2_grpc.PoolAdminStub(channel).RecycleWorker(
                pool_pb2.RecycleWorkerRequest(pool_id="ghost-1"), timeout=5)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert "ghost-1" in info.value.details()


def test_duplicate_runner_worker_id_is_refused(shared_sidecar: Sidecar, tmp_path) -> None:
    job = BackgroundJob(shared_sidecar.address, str(tmp_path))
    try:
        job.wait_started()
        runner_id = next(a.runner_worker_id for a in shared_sidecar.status().assignments
                         if a.outcome == "running")
        response = _start(shared_sidecar.address, worker_id=runner_id,
                          control_endpoint=_url("127.0.0.1:1"))
        assert f"runner worker id '{runner_id}' already has worker" in response.error
    finally:
        job.release()
        job.join()
    assert job.error is None


def test_still_serving_after_all_of_that(shared_sidecar: Sidecar) -> None:
    assert shared_sidecar.wait_warm(1, timeout=60)
    run(shared_sidecar.address, lambda p: assert_that(
        p | beam.Create(["ok"]), equal_to(["ok"])))
