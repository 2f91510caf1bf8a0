"""A real Flink runner (PyFlink's local MiniCluster, Java) through the proxy, served
by PyFlink's own ``beam_boot`` run as an independent container would run it.

The job's Python operator boots with PYTHON_LOOPBACK_SERVER_ADDRESS = the sidecar
(the TaskManager side: StartWorker with only ``worker_id`` and
``provision_endpoint``); the harness is a separate ``beam_boot --id sdk-2`` with
no loopback variable, held in GetProvisionInfo until the stage is assigned. Data
and keyed state then travel between Flink's Java Fn API servers and the harness
through the sidecar.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness_pool.sidecar.server import Sidecar
from tests.proxy.boots import BootLoop, pyflink_boot
from tests.proxy.helpers import externals, wait_waiting

JOB = str(Path(__file__).with_name("pyflink_job.py"))

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="needs a Java runtime")


def test_pyflink_job_on_flink_minicluster_through_pyflink_beam_boot(
        sidecar_factory: Callable[..., Sidecar], boots: Callable[[list[str]], BootLoop],
        tmp_path: Path) -> None:
    sidecar = sidecar_factory(workers=0, external_worker_ids=("sdk-2",), warm=False,
                              assign_timeout=120)
    boots(pyflink_boot("sdk-2", sidecar.address))
    wait_waiting(sidecar, "sdk-2")
    log = tmp_path / "job.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, JOB, sidecar.address], stdout=subprocess.PIPE,
                                stderr=err, start_new_session=True, cwd=tmp_path)
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # its whole session: the job and the JVM it launched
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log.read_text(errors="replace")[-4000:]
    results = [tuple(r) for r in json.loads(out.decode().strip().splitlines()[-1])]
    # A keyed running count: every intermediate value, so state was read and written.
    assert results == [("a", 1), ("b", 1), ("b", 2), ("c", 1), ("c", 2), ("c", 3)]
    worker = externals(sidecar)["sdk-2"]
    assert worker.assignments_served == 1 and worker.bytes_forwarded > 0
    assert sidecar.metrics.forwarded.labels("state")._value.get() > 0
    assert sidecar.metrics.forwarded.labels("data")._value.get() > 0
