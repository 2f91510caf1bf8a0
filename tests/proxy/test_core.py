"""The pure core and the endpoint rewriting: table-driven, no grpc, no processes."""

from __future__ import annotations

import pytest
from apache_beam.portability.api import (
    beam_fn_api_pb2,
    beam_provision_api_pb2,
    beam_runner_api_pb2,
    endpoints_pb2,
)

from harness_pool._errors import IllegalTransition
from harness_pool.proxy import rewrite
from harness_pool.proxy.core import ExternalCore, ExternalState, ProxyError, RunnerId

EP = {"control_endpoint": "runner:1", "logging_endpoint": "runner:2",
      "artifact_endpoint": "runner:3", "provision_endpoint": "runner:4", "status_endpoint": ""}


def busy_core(*pairs: tuple[str, str]) -> ExternalCore:
    """A core whose ids in ``pairs`` each serve the paired runner id (BUSY)."""
    core = ExternalCore([wid for wid, _ in pairs] + ["idle-1"])
    for t, (wid, runner) in enumerate(pairs):
        assert core.hold(wid, t) is None
        assert core.claim(RunnerId(runner), EP, t).wid == wid  # type: ignore[union-attr]
        core.connect_control(wid, t)
    return core


@pytest.mark.parametrize(("header", "code"), [
    pytest.param(None, "INVALID_ARGUMENT", id="missing"),
    pytest.param("", "INVALID_ARGUMENT", id="empty"),
    pytest.param("nobody", "PERMISSION_DENIED", id="unknown"),
])
def test_identification_refusals(header: str | None, code: str) -> None:
    with pytest.raises(ProxyError) as err:
        ExternalCore(["sdk-1"]).hold(header, 0)
    assert err.value.code == code
    if header:
        assert header in str(err.value)


def test_life_cycle_and_reassignment_only_after_a_fresh_provision_call() -> None:
    core = ExternalCore(["sdk-1"])
    assert core.claim(RunnerId("r1"), EP, 0) is None  # nobody waiting
    assert core.hold("sdk-1", 1) is None
    with pytest.raises(ProxyError, match="sdk-1") as err:
        core.hold("sdk-1", 1)
    assert err.value.code == "ALREADY_EXISTS"
    worker = core.claim(RunnerId("r1"), EP, 2)
    assert worker is not None and worker.state is ExternalState.ASSIGNED
    assert core.hold("sdk-1", 3) is worker.stage  # mid-stage re-read: answered at once
    core.connect_control("sdk-1", 4)
    with pytest.raises(ProxyError) as err:
        core.connect_control("sdk-1", 5)
    assert err.value.code == "ALREADY_EXISTS" and "sdk-1" in str(err.value)
    stage = core.end(worker.wid, worker.stage.serial, 6)  # type: ignore[union-attr]
    assert stage is not None and worker.state is ExternalState.DISCONNECTED
    assert worker.stages_served == 1
    assert core.end(worker.wid, stage.serial, 7) is None  # idempotent
    assert core.claim(RunnerId("r2"), EP, 8) is None  # not until GetProvisionInfo again
    with pytest.raises(ProxyError) as err:
        core.connect_control("sdk-1", 9)
    assert err.value.code == "FAILED_PRECONDITION"


def test_longest_waiting_id_gets_the_stage_and_a_runner_id_is_served_once() -> None:
    core = ExternalCore(["sdk-1", "sdk-2"])
    core.hold("sdk-2", 1)
    core.hold("sdk-1", 2)
    assert core.claim(RunnerId("r1"), EP, 3).wid == "sdk-2"  # type: ignore[union-attr]
    with pytest.raises(ProxyError) as err:
        core.claim(RunnerId("r1"), EP, 4)
    assert err.value.code == "ALREADY_EXISTS"


def test_draining_refuses_new_holds_and_stages() -> None:
    core = ExternalCore(["sdk-1"])
    core.hold("sdk-1", 0)
    core.draining = True
    with pytest.raises(ProxyError) as err:
        core.claim(RunnerId("r1"), EP, 1)
    assert err.value.code == "UNAVAILABLE"


def test_illegal_transition_names_both_states() -> None:
    worker = ExternalCore(["sdk-1"]).workers["sdk-1"]  # type: ignore[index]
    with pytest.raises(IllegalTransition, match="disconnected.*busy"):
        worker.move(ExternalState.BUSY, 0)


@pytest.mark.parametrize(("header", "instruction", "expect"), [
    pytest.param("sdk-1", "", "sdk-1", id="rule1-pool-id"),
    pytest.param("r-2", "", "sdk-2", id="rule2-runner-id"),
    pytest.param(None, "only-on-2", "sdk-2", id="rule3-missing-header"),
    pytest.param("container-7", "only-on-1", "sdk-1", id="rule3-unknown-header"),
    pytest.param("idle-1", "only-on-1", "sdk-1", id="rule3-header-of-idle-id"),
    pytest.param(None, "on-both", "FAILED_PRECONDITION", id="rule4-ambiguous"),
    pytest.param(None, "nowhere", "NOT_FOUND", id="rule4-unknown-instruction"),
    pytest.param(None, "", "INVALID_ARGUMENT", id="no-header-no-instruction"),
])
def test_routing_rule(header: str | None, instruction: str, expect: str) -> None:
    core = busy_core(("sdk-1", "r-1"), ("sdk-2", "r-2"))
    core.workers["sdk-1"].stage.issued("only-on-1")  # type: ignore[index,union-attr]
    core.workers["sdk-2"].stage.issued("only-on-2")  # type: ignore[index,union-attr]
    for wid in ("sdk-1", "sdk-2"):
        core.workers[wid].stage.issued("on-both")  # type: ignore[index,union-attr]
    worker = core.route_header(header)
    if worker is None:
        try:
            worker = core.route_instruction(instruction, "State")
        except ProxyError as exc:
            assert exc.code == expect
            return
    assert worker.wid == expect


def test_provision_info_endpoints_point_at_the_sidecar() -> None:
    info = beam_provision_api_pb2.ProvisionInfo(
        control_endpoint=endpoints_pb2.ApiServiceDescriptor(url="runner:1"),
        logging_endpoint=endpoints_pb2.ApiServiceDescriptor(url="runner:2"),
        artifact_endpoint=endpoints_pb2.ApiServiceDescriptor(url="runner:3"),
        retrieval_token="t")
    out = rewrite.provision_info(info, "sidecar:5")
    assert (out.control_endpoint.url, out.logging_endpoint.url, out.artifact_endpoint.url) == (
        "sidecar:5",) * 3
    assert out.status_endpoint.url == ""  # none offered: none invented
    assert out.retrieval_token == "t" and info.control_endpoint.url == "runner:1"


def test_descriptor_data_state_and_timer_endpoints_point_at_the_sidecar() -> None:
    port = beam_fn_api_pb2.RemoteGrpcPort(
        api_service_descriptor=endpoints_pb2.ApiServiceDescriptor(url="runner:data"),
        coder_id="c").SerializeToString()
    pbd = beam_fn_api_pb2.ProcessBundleDescriptor(
        id="1",
        transforms={
            "in": beam_runner_api_pb2.PTransform(spec=beam_runner_api_pb2.FunctionSpec(
                urn="beam:runner:source:v1", payload=port)),
            "out": beam_runner_api_pb2.PTransform(spec=beam_runner_api_pb2.FunctionSpec(
                urn="beam:runner:sink:v1", payload=port)),
            "user": beam_runner_api_pb2.PTransform(spec=beam_runner_api_pb2.FunctionSpec(
                urn="beam:transform:pardo:v1", payload=b"opaque")),
        },
        state_api_service_descriptor=endpoints_pb2.ApiServiceDescriptor(url="runner:state"),
        timer_api_service_descriptor=endpoints_pb2.ApiServiceDescriptor(url="runner:data"))
    req = beam_fn_api_pb2.InstructionRequest(
        instruction_id="register-1",
        register=beam_fn_api_pb2.RegisterRequest(process_bundle_descriptor=[pbd]))
    changed, seen = rewrite.instruction(req, "sidecar:5")
    assert changed and seen == [rewrite.RunnerEndpoints(data="runner:data", state="runner:state")]
    out = req.register.process_bundle_descriptor[0]
    for name in ("in", "out"):
        p = beam_fn_api_pb2.RemoteGrpcPort.FromString(out.transforms[name].spec.payload)
        assert p.api_service_descriptor.url == "sidecar:5" and p.coder_id == "c"
    assert out.transforms["user"].spec.payload == b"opaque"
    assert out.state_api_service_descriptor.url == "sidecar:5"
    assert out.timer_api_service_descriptor.url == "sidecar:5"
    bundle = beam_fn_api_pb2.InstructionRequest(
        instruction_id="b1", process_bundle=beam_fn_api_pb2.ProcessBundleRequest())
    assert rewrite.instruction(bundle, "sidecar:5") == (False, [])
