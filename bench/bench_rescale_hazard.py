"""How often does a rescale hit ``IllegalStateException: Reference count must not be negative``?

During a rescale a TaskManager has been seen to fail with that exception from
Beam's ``DefaultJobBundleFactory$WrappedSdkHarnessClient.unref`` (Flink's copy
in flink-python). This script counts it over many rescales, with the pod's
sidecar (fast boot) and with PyFlink's process mode, on the same job:

for each mode, a reactive cluster with one pod runs ``reactive_count.py``;
then ``--rounds`` times: a pod joins (rescale 2 -> 4), then leaves (4 -> 2) by
``--removal`` (sigterm, sigkill, or alternate). After each rescale it counts new
hazard lines in every TaskManager's log, new job failovers (exception history),
and TaskManagers that exited on their own (pod 1 is replaced if it dies, so the
run goes on). At the end the keyed counts are checked (replays, never a reset).

Run: ``.venv/bin/python -m bench.bench_rescale_hazard --rounds 10`` (20 rescales a
mode); writes ``bench/results/rescale_hazard.json``. Hazard lines found are kept
with their context in the JSON, so they can be read without the logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.rescale_rounds import HAZARD, run_rounds
from harness_pool.flink.keyed_output import count_problems, read_folder
from harness_pool.flink.pod import PythonWorkers, Removal
from harness_pool.flink.reactive import ReactiveCluster, ReactiveSettings

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
JOB = HERE.parent / "harness_pool" / "demo" / "jobs" / "reactive_count.py"
SLOTS = 2


def _removal(policy: str, i: int) -> Removal:
    if policy == "alternate":
        return Removal.SIGTERM if i % 2 == 0 else Removal.SIGKILL
    return Removal(policy)


def _contexts(cluster: ReactiveCluster, limit: int = 6) -> list[str]:
    """A few log excerpts around hazard lines (for the JSON)."""
    found: list[str] = []
    for pod in cluster.pods.values():
        for path in pod.log_dir.glob("*"):
            if not path.is_file():
                continue
            lines = path.read_text(errors="replace").splitlines()
            for n, line in enumerate(lines):
                if HAZARD in line and len(found) < limit:
                    found.append(f"{pod.name}/{path.name}:{n + 1}\n" +
                                 "\n".join(lines[max(0, n - 8): n + 12]))
    return found


def run_mode(mode: PythonWorkers, rounds: int, removal: str, workdir: Path,
             keep_logs: Path | None) -> dict[str, Any]:
    cluster = ReactiveCluster(workdir, ReactiveSettings(
        job=JOB, job_args=(str(workdir / "out"), "20", "8"), python=mode,
        slots_per_pod=SLOTS))
    try:
        cluster.start(pods=1)
        seen = run_rounds(cluster, rounds, SLOTS, lambda i: _removal(removal, i), mode.value)
        steps, tm_deaths = seen.steps, seen.taskmanager_deaths
        counts = count_problems(read_folder(workdir / "out"))
        contexts = _contexts(cluster)
    finally:
        cluster.stop()
        if keep_logs is not None:
            cluster.collect_logs(keep_logs / mode.value)
    return {
        "mode": mode.value, "rounds": rounds, "removal": removal,
        "rescales": sum(1 for s in steps if not s.error),
        "hazard_hits": sum(s.hazard_hits for s in steps),
        "rescales_with_hazard": sum(1 for s in steps if s.hazard_hits),
        "taskmanager_deaths": tm_deaths,
        "failovers": sum(s.failovers for s in steps),
        "errors": [s.error for s in steps if s.error],
        "count_problems": counts,
        "hazard_contexts": contexts,
        "steps": [s.__dict__ for s in steps],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="join+leave rounds per mode "
                        "(2 rescales each)")
    parser.add_argument("--modes", default="pool,process",
                        help="comma-separated: pool, pool-pyflink-boot, process")
    parser.add_argument("--removal", choices=("sigterm", "sigkill", "alternate"),
                        default="sigterm")
    parser.add_argument("--out", type=Path, default=RESULTS / "rescale_hazard.json")
    parser.add_argument("--keep-logs", type=Path, default=None,
                        help="copy every log folder here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = []
    for name in args.modes.split(","):
        workdir = Path(tempfile.mkdtemp(prefix=f"hp-hazard-{name}-"))
        try:
            results.append(run_mode(PythonWorkers(name), args.rounds, args.removal, workdir,
                                    args.keep_logs))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"hazard": HAZARD, "results": results}, indent=2))
    print(f"\n{'mode':<18} {'rescales':>8} {'with hazard':>11} {'TM deaths':>9} "
          f"{'failovers':>9} {'errors':>6}")
    for r in results:
        print(f"{r['mode']:<18} {r['rescales']:>8} {r['rescales_with_hazard']:>11} "
              f"{len(r['taskmanager_deaths']):>9} {r['failovers']:>9} {len(r['errors']):>6}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
