"""Identity and exposure: who may attach as a pooled worker, who may stop workers."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest

from bench.common import MiniRunner
from harness_pool.flink.local_cluster import free_port
from harness_pool.pool.supervisor import SpawnSpec
from harness_pool.sidecar.server import Sidecar
from harness_pool.sidecar.settings import SidecarSettings
from harness_pool.v1 import pool_pb2, pool_pb2_grpc
from tests.sidecar_fixtures import pid_alive


class NeverAttaches:
    """Spawns processes that never attach: their pool ids stay 'spawning'."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def launch(self, spec: SpawnSpec) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        self.procs.append(proc)
        return proc

    def helper_pids(self) -> set[int]:
        return set()


def _attach(address: str, pool_id: str, token: str) -> tuple[grpc.RpcError | None, list]:
    with grpc.insecure_channel(address) as channel:
        stub = pool_pb2_grpc.WorkerRegistryStub(channel)
        hello = pool_pb2.WorkerEvent(hello=pool_pb2.Hello(pid=0, token=token))
        got: list = []
        try:
            for assignment in stub.Attach(iter([hello]), metadata=(("worker_id", pool_id),),
                                          timeout=5):
                got.append(assignment)
        except grpc.RpcError as exc:
            return exc, got
    return None, got


def test_an_impostor_with_a_guessed_pool_id_gets_permission_denied_and_no_stage() -> None:
    launcher = NeverAttaches()
    sidecar = Sidecar(SidecarSettings(port=0, workers=1, assign_timeout=1.0, stop_grace=1.0,
                                      drain_timeout=1.0), launcher=launcher)
    runner = MiniRunner()
    sidecar.start()
    try:
        deadline = time.monotonic() + 30
        while not launcher.procs:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        pool_id = sidecar.status().workers[0].pool_id  # "worker-1", spawning: easy to guess
        for token in ("", "guessed-secret"):
            err, got = _attach(sidecar.worker_address, pool_id, token)
            assert err is not None and err.code() is grpc.StatusCode.PERMISSION_DENIED, err
            assert pool_id in err.details() and not got
        assert sidecar.pool.counts()["idle"] == 0
        response = runner.start_worker(sidecar.address, "stage-1", timeout=30)
        assert "no idle worker" in response.error  # nothing was handed to the impostor
        assert not runner.arrived
    finally:
        runner.stop()
        sidecar.stop()
    assert not [p.pid for p in launcher.procs if pid_alive(p.pid)]


def test_recycle_is_refused_on_the_pod_facing_ports_and_served_on_the_admin_socket(
        sidecar_factory, tmp_path) -> None:
    fn_port = free_port()
    admin = f"unix:{tmp_path}/admin.sock"
    sidecar = sidecar_factory(workers=1, external_worker_ids=("sdk-1",), fn_api_port=fn_port,
                              admin_address=admin)
    victim = next(w for w in sidecar.status().workers if w.kind == "pooled")
    for address in (sidecar.address, f"127.0.0.1:{fn_port}"):  # what a job's harness reaches
        with grpc.insecure_channel(address) as channel:
            stub = pool_pb2_grpc.PoolAdminStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.RecycleWorker(pool_pb2.RecycleWorkerRequest(pool_id=victim.pool_id),
                                   timeout=5)
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "--admin-address" in info.value.details()
            assert stub.GetStatus(pool_pb2.GetStatusRequest(), timeout=5).workers  # read-only ok
    refused = subprocess.run(  # the operator's command, pointed at a pod-facing port
        [sys.executable, "-m", "harness_pool", "recycle", "--address", sidecar.address,
         victim.pool_id], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr, refused
    assert sidecar.core.workers[victim.pool_id].state.value == "idle"
    done = subprocess.run(  # ... and at the admin socket
        [sys.executable, "-m", "harness_pool", "recycle", "--address", admin, victim.pool_id],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 30
    while pid_alive(victim.pid):
        assert time.monotonic() < deadline, "the recycled worker is still running"
        time.sleep(0.05)
    assert sidecar.wait_warm(1, timeout=60)


def test_an_admin_socket_in_a_missing_folder_is_a_clear_error(tmp_path) -> None:
    missing = tmp_path / "not-mounted"
    out = subprocess.run(
        [sys.executable, "-m", "harness_pool", "serve", "--port", "0", "--workers", "1",
         "--admin-address", f"unix:{missing}/admin.sock"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert f"the folder {missing} does not exist" in out.stderr
