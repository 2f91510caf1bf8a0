"""Bounds on every input: silent streams, cancelled and flooding StartWorker calls,
odd environments, RPC caps and keepalive. Each test names the finding it covers."""

from __future__ import annotations

import os
import signal
import threading
import time

import apache_beam as beam
import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc
from apache_beam.testing.util import assert_that, equal_to
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import MiniRunner
from harness_pool.v1 import pool_pb2, pool_pb2_grpc
from tests.sidecar.beam_helpers import run
from tests.sidecar.tcp_tricks import Blackhole, FirstOnly
from tests.sidecar_fixtures import pid_alive


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_an_attach_that_never_sends_is_cancelled_after_the_first_message_timeout(
        sidecar_factory) -> None:
    sidecar = sidecar_factory(workers=1, first_message_timeout=1.0)
    never = threading.Event()

    def silent():
        never.wait(60)
        yield from ()

    with grpc.insecure_channel(sidecar.worker_address) as channel:
        call = pool_pb2_grpc.WorkerRegistryStub(channel).Attach(
            silent(), metadata=(("worker_id", "worker-1"),), timeout=30)
        try:
            list(call)
        except grpc.RpcError as exc:
            code = exc.code()
        else:
            code = grpc.StatusCode.OK
        never.set()
    assert code is grpc.StatusCode.CANCELLED, f"the silent stream was held until {code}"


def test_a_cancelled_start_worker_releases_its_worker_at_once(sidecar_factory) -> None:
    """The worker cannot reach the runner (its endpoint answered only the sidecar's check);
    the runner gives up after 3 s: the worker goes now, not after --start-timeout (120 s)."""
    sidecar = sidecar_factory(workers=1, start_timeout=120)
    runner = MiniRunner()
    trap = FirstOnly(runner.address)
    try:
        request = runner.request("gives-up-1")
        request.control_endpoint.url = trap.address
        request.ClearField("logging_endpoint")
        with grpc.insecure_channel(sidecar.address) as channel:
            stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)
            try:
                stub.StartWorker(request, timeout=3)
            except grpc.RpcError as exc:
                assert exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        _wait(lambda: sidecar.core.holder_of("gives-up-1") is None, 20,
              "the cancelled stage's worker to be released")
        record = sidecar.status().assignments[0]
        assert record.runner_worker_id == "gives-up-1" and record.outcome == "cancelled"
        _wait(lambda: not pid_alive(record.pid), 20, "the worker process to end")
        assert sidecar.wait_warm(1, timeout=60)
    finally:
        trap.close()
        runner.stop()


def test_a_flood_of_never_answering_runners_takes_no_worker_from_a_valid_one(
        sidecar_factory) -> None:
    """The flood rule (runner_service docstring): 12 StartWorker calls whose control
    endpoint never answers, on a pool of 2, then one valid call."""
    sidecar = sidecar_factory(workers=2, max_processes=2, start_timeout=4, assign_timeout=30)
    hole = Blackhole()
    runner = MiniRunner()
    answers: dict[str, str] = {}

    def flood(i: int) -> None:
        request = runner.request(f"flood-{i}")
        request.control_endpoint.url = hole.address
        with grpc.insecure_channel(sidecar.address) as channel:
            answers[f"flood-{i}"] = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(
                channel).StartWorker(request, timeout=60).error

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(12)]
    try:
        for t in threads:
            t.start()
        response = runner.start_worker(sidecar.address, "valid-1", timeout=60)
        assert response.error == ""
        assert runner.wait_arrived("valid-1", 10)
        for t in threads:
            t.join(60)
        assert len(answers) == 12
        for wid, error in answers.items():
            assert f"stage {wid}: runner control endpoint" in error
            assert "no worker was taken" in error
        assert [a.runner_worker_id for a in sidecar.status().assignments] == ["valid-1"]
    finally:
        runner.release("valid-1")
        runner.stop()
        hole.close()


def test_non_utf8_params_get_a_fast_error_naming_the_field(sidecar_factory) -> None:
    sidecar = sidecar_factory(workers=1)
    runner = MiniRunner()
    try:
        raw = runner.request("utf-1", GOOD="ok", BAD="PLACEHOLDER").SerializeToString()
        raw = raw.replace(b"PLACEHOLDER", b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5")
        with grpc.insecure_channel(sidecar.address) as channel:
            call = channel.unary_unary("/org.apache.beam.model.fn_execution.v1."
                                       "BeamFnExternalWorkerPool/StartWorker")
            out = beam_fn_api_pb2.StartWorkerResponse.FromString(call(raw, timeout=10))
        assert "params['BAD'] is not valid UTF-8" in out.error and "utf-1" in out.error
        assert sidecar.pool.counts()["idle"] == 1 and not sidecar.status().assignments
    finally:
        runner.stop()


def _env(name: str):
    import os

    return os.environ.get(name)


def test_environment_names_kubernetes_allows_and_shell_functions_reach_the_stage(
        sidecar_factory) -> None:
    """PyFlink sends the TaskManager's whole environment as params: names Kubernetes 1.30+
    accepts (any printable ASCII but '=') and bash's exported functions must not fail it."""
    from apache_beam.runners.portability import fn_api_runner
    from apache_beam.transforms import environments

    sidecar = sidecar_factory(workers=1)
    params = {"BASH_FUNC_greet%%": "() {  echo hi\n}", "1ST.my-var": "one", "with space": "two",
              "colon:and;semi": "three"}
    r = fn_api_runner.FnApiRunner(default_environment=environments.ExternalEnvironment(
        sidecar.address, params=params))
    with beam.Pipeline(runner=r) as p:
        assert_that(p | beam.Create(sorted(params)) | beam.Map(lambda k: (k, _env(k))),
                    equal_to(sorted(params.items())))
    assert sidecar.status().assignments[0].runner_worker_id


def test_any_printable_worker_id_is_safe(sidecar_factory, tmp_path) -> None:
    """Slashes, dots and spaces in a runner's id build no path (the worker's temp dir)."""
    sidecar = sidecar_factory(workers=1)
    runner = MiniRunner()
    wid = f"job/../../{tmp_path.name} 'x'"
    try:
        assert runner.start_worker(sidecar.address, wid).error == ""
        assert runner.wait_arrived(wid, 30)
    finally:
        runner.release(wid)
        runner.stop()
    assert not list(tmp_path.parent.glob(f"{tmp_path.name} 'x'*"))


def test_calls_beyond_the_rpc_cap_are_refused_at_once(sidecar_factory) -> None:
    sidecar = sidecar_factory(workers=1, max_concurrent_rpcs=3, start_timeout=60)
    hole = Blackhole()
    runner = MiniRunner()
    channel = grpc.insecure_channel(sidecar.address)
    stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)
    held = []
    try:
        for i in range(3):  # each waits up to --start-timeout for the blackhole to answer
            request = runner.request(f"held-{i}")
            request.control_endpoint.url = hole.address
            held.append(stub.StartWorker.future(request, timeout=60))
        time.sleep(1.0)
        t0 = time.monotonic()
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=20)
        except grpc.RpcError as exc:
            assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        else:
            raise AssertionError("a fourth concurrent call was served beyond the cap of 3")
        assert time.monotonic() - t0 < 15  # refused, not queued behind the held calls
    finally:
        for future in held:
            future.cancel()
        channel.close()
        runner.stop()
        hole.close()
    _wait(lambda: _serving(sidecar.address), 30, "the cap to free up once the calls left")


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5).status == 1
        except grpc.RpcError:
            return False


def test_a_frozen_idle_worker_is_noticed_by_keepalive_and_replaced(sidecar_factory) -> None:
    sidecar = sidecar_factory(workers=1, keepalive_time=1.0, keepalive_timeout=1.0,
                              stop_grace=1.0)
    frozen = next(w for w in sidecar.status().workers if w.state == "idle")
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        _wait(lambda: sidecar.core.workers[frozen.pool_id].state.value != "idle", 30,
              "the frozen worker to stop counting as idle")
        _wait(lambda: not pid_alive(frozen.pid), 30, "the frozen worker to be killed")
    finally:
        if pid_alive(frozen.pid):
            os.kill(frozen.pid, signal.SIGCONT)
    assert sidecar.wait_warm(1, timeout=60)
    run(sidecar.address, lambda p: assert_that(p | beam.Create([1]), equal_to([1])))
    assert pool_pb2.PoolStatus  # the replacement served
