"""``harness-pool demo --flink``: a real local Flink cluster whose TaskManager's Python
stages are served by a harness-pool sidecar.

Starts the sidecar (pyflink flavour, one warm worker per slot), a local Flink
session cluster (1 JobManager, 1 TaskManager with 4 slots) from the
``apache-flink`` package with ``PYTHON_LOOPBACK_SERVER_ADDRESS`` pointing at
the sidecar, runs ``jobs/keyed_count.py`` at parallelism 4, prints which pooled
process served which slot's stage and the job's runtime, and stops everything.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

KEYED_COUNT = Path(__file__).resolve().parent / "jobs" / "keyed_count.py"


def run_flink_demo(args: argparse.Namespace) -> int:
    from harness_pool import boot
    from harness_pool.flink.local_cluster import LocalFlinkCluster, free_port
    from harness_pool.sidecar.cli import format_table
    from harness_pool.sidecar.server import Sidecar
    from harness_pool.sidecar.settings import SidecarSettings

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="hp-demo-"))
    port = args.port or free_port()
    address = f"127.0.0.1:{port}"
    sidecar = Sidecar(SidecarSettings(port=port, workers=max(args.workers, 4), flavor="pyflink"))
    cluster = LocalFlinkCluster(workdir / "flink", slots=4,
                                env={"PYTHON_LOOPBACK_SERVER_ADDRESS": address},
                                conf={"python.executable": boot.executable()})
    try:
        sidecar.start()
        print(f"sidecar {address} (pyflink flavour) warming {sidecar.settings.workers} workers")
        cluster.start()
        print(f"Flink cluster at {cluster.rest_url}: 1 TaskManager, 4 slots, "
              f"PYTHON_LOOPBACK_SERVER_ADDRESS={address}, python.executable=harness-pool-python "
              f"(started in {cluster.start_seconds:.0f}s)")
        if not sidecar.wait_warm(timeout=120):
            print(format_table(sidecar.status()))
            return 1
        out = workdir / "out"
        t0 = time.monotonic()
        job = cluster.run_python_job(KEYED_COUNT, [str(out), str(args.records)])
        while (state := cluster.job_state(job)) not in ("FINISHED", "FAILED", "CANCELED"):
            time.sleep(0.2)
        runtime = time.monotonic() - t0
        print(f"\njob {job}: {state} in {runtime:.1f}s (submit to finished, `flink run` included)")
        counts: dict[str, int] = defaultdict(int)
        for path in out.glob("result-*.csv"):
            for line in path.read_text().splitlines():
                if line and not line.startswith("#"):
                    key, count = line.split(",")
                    counts[key] = max(counts[key], int(count))
        print("keyed counts: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        sidecar.pool.wait_until_no_stage(10)
        status = sidecar.status()
        print("\nslot stage -> pooled process:")
        for record in sorted(status.assignments, key=lambda r: r.runner_worker_id):
            print(f"  slot stage {record.runner_worker_id:<6} worker {record.pool_id:<10} pid "
                  f"{record.pid:<7} ready in {record.time_to_ready_seconds * 1000:6.1f} ms "
                  f"-> {record.outcome}")
        print()
        print(format_table(status))
        return 0 if state == "FINISHED" else 1
    finally:
        cluster.stop()
        sidecar.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
