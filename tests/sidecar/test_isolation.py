"""Isolation and concurrency: one process per stage, never shared, bursts handled."""

from __future__ import annotations

import os
from pathlib import Path

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from harness_pool.pool.core import WorkerState
from tests.sidecar.beam_helpers import BackgroundJob, gate_pids, run


def _set_marker(x):
    import json

    json._harness_pool_marker = "job-1"  # type: ignore[attr-defined]
    return x


def _read_marker(x):
    import json

    return getattr(json, "_harness_pool_marker", None)


def test_module_global_set_by_job_1_is_absent_in_job_2(sidecar_factory) -> None:
    sidecar = sidecar_factory(workers=1)
    run(sidecar.address, lambda p: assert_that(
        p | beam.Create([1]) | beam.Map(_set_marker) | beam.Map(_read_marker),
        equal_to(["job-1"])))  # the marker is really set inside job 1's worker
    run(sidecar.address, lambda p: assert_that(
        p | beam.Create([1]) | beam.Map(_read_marker), equal_to([None])))
    pids = [a.pid for a in sidecar.status().assignments]
    assert len(pids) == len(set(pids)) >= 2, f"a process served two jobs: {pids}"


def test_four_simultaneous_stages_get_four_distinct_processes(sidecar_factory, tmp_path) -> None:
    sidecar = sidecar_factory(workers=4)
    jobs = [BackgroundJob(sidecar.address, str(tmp_path), need=4) for _ in range(4)]
    for job in jobs:
        job.join()
        assert job.error is None, job.error
    pids = gate_pids(str(tmp_path))
    assert len(set(pids)) == 4, pids
    served = sorted(a.pid for a in sidecar.status().assignments)
    assert served == pids


def test_burst_beyond_the_pool_waits_and_is_served(sidecar_factory, tmp_path) -> None:
    # One warm worker, at most two processes: the third simultaneous stage must
    # wait for a process to finish and its replacement to warm up.
    sidecar = sidecar_factory(workers=1, max_processes=2, assign_timeout=60)
    # Each stage holds its worker 1 s after the first two met at the gate.
    jobs = [BackgroundJob(sidecar.address, str(tmp_path), need=2, hold=1.0) for _ in range(3)]
    for job in jobs:
        job.join(90)
        assert job.error is None, job.error
    assert len(set(gate_pids(str(tmp_path)))) == 3
    waits = sorted(a.time_to_ready_seconds for a in sidecar.status().assignments)
    assert waits[-1] > 0.5, f"the third stage did not wait for a free process: {waits}"


def test_burst_beyond_the_pool_gets_a_clear_error_after_timeout(sidecar_factory,
                                                                tmp_path: Path) -> None:
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, endpoints_pb2

    sidecar = sidecar_factory(workers=1, max_processes=1, assign_timeout=1.0)
    job = BackgroundJob(sidecar.address, str(tmp_path))
    try:
        job.wait_started()
        with grpc.insecure_channel(sidecar.address) as channel:
            response = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel).StartWorker(
                beam_fn_api_pb2.StartWorkerRequest(
                    worker_id="late-1",
                    # any endpoint that answers an HTTP/2 handshake passes the sidecar's check
                    control_endpoint=endpoints_pb2.ApiServiceDescriptor(url=sidecar.address)),
                timeout=30)
        assert "no idle worker within 1s" in response.error
        assert "late-1" in response.error
    finally:
        job.release()
        job.join()
    assert job.error is None
    assert sidecar.wait_warm(1, timeout=60)
    assert sidecar.pool.counts()[WorkerState.IDLE.value] == 1
    assert os.path.exists(tmp_path / "release")
