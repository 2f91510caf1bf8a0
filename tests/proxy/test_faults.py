"""Faults and life cycle: a harness killed mid-bundle, status and health, shutdown."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from harness_pool.sidecar.server import Sidecar
from tests import shapes
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


def _report_and_block(x: int, folder: str) -> int:
    Path(folder, "pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # killed long before this
        time.sleep(0.05)
    return x


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_harness_killed_mid_bundle_fails_the_stage_clearly_then_serves_again(
        sidecar_factory: Callable[..., Sidecar], boots: Callable[[list[str]], BootLoop],
        tmp_path: Path) -> None:
    sidecar = sidecar_factory(workers=0, external_worker_ids=IDS, warm=False)
    (loop,) = start_beam_boots(sidecar, boots, "sdk-1")
    job = BackgroundJob(sidecar.address, lambda p: p | beam.Create([1])
                        | beam.Map(_report_and_block, str(tmp_path)))
    wait_for(lambda: (tmp_path / "pid").exists(), 60, "the bundle to start")
    pid = int((tmp_path / "pid").read_text())
    assert loop.kill_current() == pid  # the harness itself, mid-bundle
    job.join()  # fails if the runner never learnt that its harness died
    assert len(job.errors) == 1
    message = str(job.errors[0])
    assert "sdk-1" in message and "mid-stage" in message, message
    status = externals(sidecar)["sdk-1"]
    assert "mid-stage" in status.last_error

    # The boot loop restarts the container; the id waits again and serves the next job.
    def ok(p: beam.Pipeline) -> None:
        assert_that(p | beam.Create([1, 2]) | beam.Map(lambda x: x + 1), equal_to([2, 3]))

    run(sidecar.address, ok)
    assert served(sidecar)["sdk-1"] == 2


def test_status_and_health_count_external_workers(
        sidecar_factory: Callable[..., Sidecar], boots: Callable[[list[str]], BootLoop]) -> None:
    sidecar = sidecar_factory(workers=0, external_worker_ids=IDS, warm=False)
    status = sidecar.status()
    assert not status.serving
    assert {w.pool_id: (w.kind, w.state, w.connected) for w in status.workers} == {
        "sdk-1": ("external", "disconnected", False), "sdk-2": ("external", "disconnected", False)}
    start_beam_boots(sidecar, boots, "sdk-2")
    wait_waiting(sidecar, "sdk-2")
    status = sidecar.status()
    assert status.serving
    assert externals(sidecar)["sdk-2"].connected
    run(sidecar.address, lambda p: p | beam.Create(["a"]) | beam.Map(str.upper))
    worker = externals(sidecar)["sdk-2"]
    assert worker.assignments_served == 1 and worker.bytes_forwarded > 0
    assert sidecar.metrics.assignments.labels("external")._value.get() == 1
    assert sidecar.metrics.forwarded.labels("control")._value.get() > 0


def test_mixed_pool_prefers_a_waiting_external_worker(
        sidecar_factory: Callable[..., Sidecar], boots: Callable[[list[str]], BootLoop]) -> None:
    sidecar = sidecar_factory(workers=1, external_worker_ids=("sdk-1",), warm=True)
    (loop,) = start_beam_boots(sidecar, boots, "sdk-1")
    wait_waiting(sidecar, "sdk-1")
    run(sidecar.address, lambda p: p | beam.Create([1]) | beam.Map(lambda x: x))
    assert served(sidecar)["sdk-1"] == 1
    assert list(sidecar.status().assignments) == [], "the pooled worker was used"
    # With no external harness waiting (its container is gone), the pool serves.
    loop.stop()
    wait_for(lambda: externals(sidecar)["sdk-1"].state == "disconnected", 30)
    run(sidecar.address, lambda p: p | beam.Create([1]) | beam.Map(lambda x: x))
    assert len(sidecar.status().assignments) == 1
    assert served(sidecar)["sdk-1"] == 1


def test_artifact_retrieval_is_forwarded_to_the_stage_with_the_runner_id(
        sidecar_factory: Callable[..., Sidecar], boots: Callable[[list[str]], BootLoop],
        tmp_path: Path) -> None:
    """What a container boot does before starting the harness: resolve its artifacts."""
    import grpc
    from apache_beam.portability.api import (
        beam_artifact_api_pb2,
        beam_artifact_api_pb2_grpc,
        beam_runner_api_pb2,
    )

    sidecar = sidecar_factory(workers=0, external_worker_ids=IDS, warm=False)
    start_beam_boots(sidecar, boots, "sdk-1")
    gate = tmp_path / "go"
    job = BackgroundJob(sidecar.address,
                        lambda p: p | beam.Create([1]) | beam.Map(wait_for_gate, str(gate)))
    try:
        wait_for(lambda: externals(sidecar)["sdk-1"].state == "busy", 60, "sdk-1 busy")
        dep = beam_runner_api_pb2.ArtifactInformation(
            type_urn="beam:artifact:type:embedded:v1",
            type_payload=beam_runner_api_pb2.EmbeddedFilePayload(
                data=b"hello").SerializeToString())
        with grpc.insecure_channel(sidecar.address) as ch:
            stub = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(ch)
            resolved = stub.ResolveArtifacts(
                beam_artifact_api_pb2.ResolveArtifactsRequest(artifacts=[dep]),
                metadata=(("worker_id", "sdk-1"),), timeout=10)
            chunks = list(stub.GetArtifact(
                beam_artifact_api_pb2.GetArtifactRequest(artifact=resolved.replacements[0]),
                metadata=(("worker_id", "sdk-1"),), timeout=10))
            with pytest.raises(grpc.RpcError) as err:
                stub.ResolveArtifacts(beam_artifact_api_pb2.ResolveArtifactsRequest(),
                                      metadata=(("worker_id", "sdk-2"),), timeout=10)
    finally:
        gate.write_text("go")
        job.join()
    assert not job.errors, job.errors
    assert b"".join(c.data for c in chunks) == b"hello"
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION  # sdk-2 has no stage
    assert "sdk-2" in err.value.details()
    assert sidecar.metrics.forwarded.labels("artifact")._value.get() >= len(b"hello")


def test_shutdown_lets_a_running_external_stage_finish(
        sidecar_factory: Callable[..., Sidecar], boots: Callable[[list[str]], BootLoop],
        tmp_path: Path) -> None:
    """SIGTERM's drain waits for external stages as for pooled ones (up to --drain-timeout)."""
    import threading

    sidecar = sidecar_factory(workers=0, external_worker_ids=("sdk-1",), warm=False,
                              drain_timeout=30)
    start_beam_boots(sidecar, boots, "sdk-1")
    gate = tmp_path / "gate"
    job = BackgroundJob(sidecar.address, lambda p: assert_that(
        p | beam.Create([7]) | beam.Map(wait_for_gate, str(gate)), equal_to([7])))
    wait_for(lambda: externals(sidecar)["sdk-1"].state == "busy", 60, "sdk-1 busy")
    stopper = threading.Thread(target=sidecar.stop)
    stopper.start()
    wait_for(lambda: not sidecar.status().serving, 10, "readiness to drop")
    assert externals(sidecar)["sdk-1"].state == "busy", "the stage was cut, not drained"
    gate.write_text("go")
    job.join()
    stopper.join(60)
    assert not stopper.is_alive()
    assert job.errors == [], job.errors


def test_fn_api_on_a_separate_port(sidecar_factory: Callable[..., Sidecar],
                                   boots: Callable[[list[str]], BootLoop]) -> None:
    """--fn-api-port: harnesses boot against that port and every endpoint they are given
    (control, logging, data, state) names it."""
    from harness_pool.flink.local_cluster import free_port
    from tests.proxy.boots import beam_boot

    fn_port = free_port()
    sidecar = sidecar_factory(workers=0, external_worker_ids=("sdk-1",), warm=False,
                              fn_api_port=fn_port)
    assert sidecar.external is not None
    assert sidecar.external.address.endswith(f":{fn_port}")
    boots(beam_boot("sdk-1", f"127.0.0.1:{fn_port}"))
    wait_waiting(sidecar, "sdk-1")
    run(sidecar.address, shapes.word_count)  # data and a side input through the proxy
    assert served(sidecar) == {"sdk-1": 1}
    assert externals(sidecar)["sdk-1"].bytes_forwarded > 0
