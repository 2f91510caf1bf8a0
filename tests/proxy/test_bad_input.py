"""Bad input on the SDK-facing services: each gets an exact status naming the id,
and the sidecar keeps serving everyone else."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import apache_beam as beam
import grpc
import pytest
from apache_beam.portability.api import (
    beam_fn_api_pb2,
    beam_fn_api_pb2_grpc,
    beam_provision_api_pb2,
    beam_provision_api_pb2_grpc,
)
from apache_beam.testing.util import assert_that, equal_to

from harness_pool.sidecar.server import Sidecar
from tests.proxy.boots import BootLoop
from tests.proxy.helpers import (
    BackgroundJob,
    externals,
    served,
    start_beam_boots,
    wait_for,
    wait_for_gate,
    wait_waiting,
)
from tests.sidecar.beam_helpers import run

IDS = ("sdk-1", "sdk-2")
FN = "/org.apache.beam.model.fn_execution.v1."


@pytest.fixture
def bare(sidecar_factory: Callable[..., Sidecar]) -> Sidecar:
    """A fixed-endpoint sidecar with no harness running."""
    return sidecar_factory(workers=0, external_worker_ids=IDS, warm=False,
                           provision_hold_timeout=30, assign_timeout=2)


@pytest.fixture
def channel(bare: Sidecar) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(bare.address) as ch:
        yield ch


def provision(ch: grpc.Channel, wid: str | None, timeout: float = 10) -> object:
    md = (("worker_id", wid),) if wid else ()
    return beam_provision_api_pb2_grpc.ProvisionServiceStub(ch).GetProvisionInfo(
        beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=md, timeout=timeout)


def control(ch: grpc.Channel, wid: str | None) -> grpc.RpcError:
    md = (("worker_id", wid),) if wid else ()
    call = beam_fn_api_pb2_grpc.BeamFnControlStub(ch).Control(iter(()), metadata=md, timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        list(call)
    return err.value


def test_missing_worker_id_header_is_invalid_argument(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        provision(channel, None)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "worker_id" in err.value.details()
    err2 = control(channel, None)
    assert err2.code() is grpc.StatusCode.INVALID_ARGUMENT
    logging = beam_fn_api_pb2_grpc.BeamFnLoggingStub(channel).Logging(iter(()), timeout=10)
    with pytest.raises(grpc.RpcError) as err3:
        list(logging)
    assert err3.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_unconfigured_id_is_permission_denied_naming_it(channel: grpc.Channel) -> None:
    for call in (lambda: provision(channel, "intruder-9"),
                 lambda: (_ for _ in ()).throw(control(channel, "intruder-9"))):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "intruder-9" in err.value.details()


def test_second_held_provision_for_the_same_id_is_refused(bare: Sidecar,
                                                         channel: grpc.Channel) -> None:
    stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
    held = stub.GetProvisionInfo.future(beam_provision_api_pb2.GetProvisionInfoRequest(),
                                        metadata=(("worker_id", "sdk-1"),), timeout=30)
    wait_waiting(bare, "sdk-1", timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        provision(channel, "sdk-1")
    assert err.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "sdk-1" in err.value.details()
    held.cancel()
    wait_for(lambda: externals(bare)["sdk-1"].state == "disconnected", 10, "held call released")


def test_control_without_an_assignment_is_failed_precondition(channel: grpc.Channel) -> None:
    err = control(channel, "sdk-2")
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "sdk-2" in err.details() and "GetProvisionInfo" in err.details()


def test_malformed_messages_get_invalid_argument(channel: grpc.Channel) -> None:
    garbage = b"\xff\xff\xff\xff\x0f"
    unary = channel.unary_unary(FN + "ProvisionService/GetProvisionInfo")
    with pytest.raises(grpc.RpcError) as err:
        unary(garbage, metadata=(("worker_id", "sdk-1"),), timeout=10)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    data = channel.stream_stream(FN + "BeamFnData/Data")
    with pytest.raises(grpc.RpcError) as err2:
        list(data(iter([garbage]), timeout=10))
    assert err2.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_state_stream_naming_no_live_instruction_is_not_found(channel: grpc.Channel) -> None:
    state = beam_fn_api_pb2_grpc.BeamFnStateStub(channel).State(
        iter([beam_fn_api_pb2.StateRequest(id="1", instruction_id="bundle_404")]), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        list(state)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    assert "bundle_404" in err.value.details()


def test_held_provision_answers_unavailable_after_the_deadline(
        sidecar_factory: Callable[..., Sidecar]) -> None:
    sidecar = sidecar_factory(workers=0, external_worker_ids=IDS, warm=False,
                              provision_hold_timeout=0.3)
    with grpc.insecure_channel(sidecar.address) as ch:
        with pytest.raises(grpc.RpcError) as err:
            provision(ch, "sdk-1")
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "sdk-1" in err.value.details()
    assert externals(sidecar)["sdk-1"].state == "disconnected"


def test_start_worker_with_no_external_worker_waiting_fails_after_assign_timeout(
        bare: Sidecar) -> None:
    with pytest.raises(Exception, match="no external worker waiting"):
        run(bare.address, lambda p: p | beam.Create([1]))


def test_second_control_stream_for_a_busy_id_is_refused(
        sidecar_factory: Callable[..., Sidecar], boots: Callable[[list[str]], BootLoop],
        tmp_path: Path) -> None:
    sidecar = sidecar_factory(workers=0, external_worker_ids=IDS, warm=False)
    start_beam_boots(sidecar, boots, "sdk-1")
    gate = tmp_path / "go"

    def build(p: beam.Pipeline) -> None:
        out = p | beam.Create([1, 2]) | beam.Map(wait_for_gate, str(gate))
        assert_that(out, equal_to([1, 2]))

    job = BackgroundJob(sidecar.address, build)
    try:
        wait_for(lambda: externals(sidecar)["sdk-1"].state == "busy", 60, "sdk-1 busy")
        with grpc.insecure_channel(sidecar.address) as ch:
            err = control(ch, "sdk-1")
    finally:
        gate.write_text("go")
        job.join()
    assert not job.errors, job.errors
    assert err.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "sdk-1" in err.details()
    assert served(sidecar)["sdk-1"] == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_oversized_message_fails_that_stage_and_the_sidecar_keeps_serving(
        sidecar_factory: Callable[..., Sidecar], boots: Callable[[list[str]], BootLoop]) -> None:
    sidecar = sidecar_factory(workers=0, external_worker_ids=IDS, warm=False)
    start_beam_boots(sidecar, boots, *IDS)
    assert sidecar.external is not None
    sidecar.external.max_message_bytes = 1024 * 1024
    size = 3 * 1024 * 1024
    # The runner's own report depends on where the refused message was (a bundle already
    # answered only sees its data stream cut); the sidecar's status names the reason.
    with pytest.raises(Exception):  # noqa: B017 - any runner failure; the reason is below
        run(sidecar.address, lambda p: p | beam.Create([0]) | beam.Map(lambda i: "x" * size)
            | beam.Reshuffle()
            | beam.Map(len) | beam.Map(_check_equal, size))
    assert "exceeds the proxy limit" in " ".join(w.last_error for w in externals(sidecar).values())
    sidecar.external.max_message_bytes = 2**31 - 1

    def small(p: beam.Pipeline) -> None:
        assert_that(p | beam.Create([1, 2]) | beam.Map(lambda x: x * 10), equal_to([10, 20]))

    run(sidecar.address, small)


def _check_equal(x: int, want: int) -> int:
    assert x == want
    return x


@pytest.mark.parametrize("service", ["BeamFnData/Data", "BeamFnState/State"])
def test_a_headerless_stream_that_never_sends_is_cancelled(sidecar_factory, service: str) -> None:
    """Routed by its first message, such a stream would hold a server thread forever."""
    import threading

    import grpc

    sidecar = sidecar_factory(workers=0, external_worker_ids=("sdk-1",), warm=False,
                              first_message_timeout=1.0)
    never = threading.Event()

    def silent():
        never.wait(60)
        yield from ()

    with grpc.insecure_channel(sidecar.address) as channel:
        call = channel.stream_stream(f"/org.apache.beam.model.fn_execution.v1.{service}")(
            silent(), timeout=30)
        with pytest.raises(grpc.RpcError) as info:
            list(call)
        never.set()
    assert info.value.code() is grpc.StatusCode.CANCELLED, info.value
