"""Pytest plugin: one real Flink cluster whose TaskManager is served by a harness-pool sidecar.

``pool_on_flink`` (session scope): a ``Sidecar`` (pyflink flavour, 4 warm
workers) on a fixed free port, and a ``LocalFlinkCluster`` (1 JobManager, 1
TaskManager with 4 slots) whose TaskManager has
``PYTHON_LOOPBACK_SERVER_ADDRESS`` pointing at it, with a fixed-delay restart
strategy so that failover can be tested. ``restart_sidecar()`` stops and
starts the sidecar on the same address (for the sidecar-outage test). On
teardown every JVM and worker process is stopped; when a test failed, the
cluster's logs are kept under ``.test-artifacts/``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness_pool import boot
from harness_pool.sidecar.server import Sidecar
from harness_pool.sidecar.settings import SidecarSettings
from tests.sidecar_fixtures import process_marks, still_running

ARTIFACTS = Path(__file__).resolve().parent.parent / ".test-artifacts"
JOBS = Path(__file__).resolve().parent / "flink" / "jobs"


class PoolOnFlink:
    def __init__(self, workdir: Path) -> None:
        from harness_pool.flink.local_cluster import LocalFlinkCluster, free_port

        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.settings = SidecarSettings(port=self.port, workers=4, max_processes=12,
                                        flavor="pyflink", drain_timeout=2, stop_grace=2)
        self.sidecar: Sidecar | None = None
        self.pids: dict[int, int] = {}  # worker pid -> start time (pids are reused)
        self.cluster = LocalFlinkCluster(
            workdir, slots=4, env={"PYTHON_LOOPBACK_SERVER_ADDRESS": self.address},
            conf={
                # the fast boot: StartWorker without importing PyFlink (harness_pool/boot.py)
                "python.executable": boot.executable(),
                "restart-strategy.type": "fixed-delay",
                "restart-strategy.fixed-delay.attempts": "3",
                "restart-strategy.fixed-delay.delay": "1 s",
            })
        self.workdir = workdir

    def start_sidecar(self) -> Sidecar:
        self.sidecar = Sidecar(self.settings)
        self.sidecar.start()
        assert self.sidecar.wait_warm(timeout=120), "the pyflink pool never got warm"
        return self.sidecar

    def stop_sidecar(self) -> None:
        if self.sidecar is not None:
            self.pids.update(process_marks(w.pid for w in self.sidecar.status().workers if w.pid))
            self.sidecar.stop()
            self.sidecar = None

    def wait_job(self, job_id: str, timeout: float = 180.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.cluster.job_state(job_id)
            if state in ("FINISHED", "FAILED", "CANCELED"):
                return state
            time.sleep(0.25)
        raise AssertionError(f"job {job_id} still {state} after {timeout}s")

    def out_dir(self, name: str) -> Path:
        path = self.workdir / "out" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@pytest.fixture(scope="session")
def pool_on_flink(tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[PoolOnFlink]:
    env = PoolOnFlink(tmp_path_factory.mktemp("pool-on-flink"))
    try:
        env.start_sidecar()
        env.cluster.start()
        yield env
    finally:
        env.cluster.stop()
        env.stop_sidecar()
        if request.session.testsfailed and env.cluster.log_dir.exists():
            target = ARTIFACTS / f"pool-on-flink-{time.strftime('%Y%m%d-%H%M%S')}"
            shutil.copytree(env.cluster.log_dir, target, dirs_exist_ok=True)
        leaked = still_running(env.pids)
        assert not leaked, f"pooled workers left behind: {leaked}"
