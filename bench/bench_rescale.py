"""Reactive mode: how long a rescale takes, and where the time goes, for three ways to run Python.

Alternatives (one local reactive application cluster each, run one after the
other; pods of 2 slots; the job is ``reactive_count.py``):

- ``pool``: each pod's own harness-pool sidecar, ``python.executable`` =
  ``harness-pool-python`` (the fast boot: StartWorker without importing PyFlink);
- ``pool-pyflink-boot``: each pod's own sidecar, PyFlink's own ``beam_boot``
  in loopback mode (it imports PyFlink and Beam before its StartWorker);
- ``process``: PyFlink's process mode (a cold Python process per slot's stage).

Per round: a pod joins (rescale up, 2 -> 4) and leaves by SIGTERM (rescale
down, 4 -> 2). Measured (medians over ``--rounds``), in seconds:

- *up*: from the TaskManager's start (``taskmanager.sh`` spawned) to the job
  RUNNING at 4 on every vertex, split into: TaskManager scripts, JVM and
  registration (start -> listed by the JobManager); waiting for the scheduler
  (registered -> rescale started: resource stabilization, cooldown, the
  checkpoint a Flink 2 rescale waits for); the rescale itself (Restarting,
  WaitingForResources, CreatingExecutionGraph); deployment; and
  INITIALIZING -> RUNNING (state restore from the checkpoint plus the Python
  workers' start; the sidecar's own ``time_to_ready`` per stage is reported
  beside it);
- *down*: from SIGTERM to the job RUNNING at 2 again, split the same way.

Run: ``.venv/bin/python -m bench.bench_rescale [--rounds 3]``; writes
``bench/results/rescale.json`` and ``rescale.png``. The machine's noise hits
the alternatives at different times (they run one after the other): compare
medians over several rounds, and rerun on a quiet machine for figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.rescale_rounds import as_json, run_rounds, summarize
from harness_pool.flink.pod import PythonWorkers, Removal
from harness_pool.flink.reactive import ReactiveCluster, ReactiveSettings

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
JOB = HERE.parent / "harness_pool" / "demo" / "jobs" / "reactive_count.py"
SLOTS = 2
MODES = (PythonWorkers.POOL, PythonWorkers.POOL_PYFLINK_BOOT, PythonWorkers.PROCESS)


def run_mode(mode: PythonWorkers, rounds: int, workdir: Path,
             keep_logs: Path | None) -> dict[str, Any]:
    cluster = ReactiveCluster(workdir, ReactiveSettings(
        job=JOB, job_args=(str(workdir / "out"), "20", "8"), python=mode, slots_per_pod=SLOTS))
    t0 = time.monotonic()
    try:
        cluster.start(pods=1)
        first_start = time.monotonic() - t0
        # a few checkpoints at the current scale before each change
        seen = run_rounds(cluster, rounds, SLOTS, lambda _: Removal.SIGTERM, mode.value,
                          pause=3.0)
    finally:
        cluster.stop()
        if keep_logs is not None:
            cluster.collect_logs(keep_logs / mode.value)
    ups = [s for s in seen.steps if s.direction == "up"]
    downs = [s for s in seen.steps if s.direction == "down"]
    return {"mode": mode.value, "cluster_start_s": first_start,
            "taskmanager_deaths": seen.taskmanager_deaths,
            "up": summarize(ups), "down": summarize(downs),
            "up_steps": as_json(ups), "down_steps": as_json(downs)}


def breakdown(summary: dict[str, Any], direction: str) -> dict[str, float]:
    """Consecutive spans (seconds) that add up to the step's total, for the plot."""
    s = summary[direction]
    marks = [("registered_s", "TaskManager start + registration")] if direction == "up" else []
    marks += [("rescale_start_s", "waiting for the scheduler"),
              ("rescale_end_s", "rescale (restart, new graph)"),
              ("running_s", "deploy, restore, Python start")]
    spans: dict[str, float] = {}
    last = 0.0
    for key, label in marks:
        value = s.get(key)
        if value is None:
            continue
        spans[label] = max(0.0, value - last)
        last = max(last, value)
    return spans


def plot(results: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"TaskManager start + registration": "tab:blue",
              "waiting for the scheduler": "tab:orange",
              "rescale (restart, new graph)": "tab:red",
              "deploy, restore, Python start": "tab:green"}
    for ax, direction in zip(axes, ("up", "down"), strict=True):
        names = [r["mode"] for r in results]
        bottoms = [0.0] * len(results)
        labels = list(dict.fromkeys(k for r in results for k in breakdown(r, direction)))
        for label in labels:
            values = [breakdown(r, direction).get(label, 0.0) for r in results]
            ax.bar(names, values, bottom=bottoms, label=label, color=colors[label])
            bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
        ax.set_title(f"rescale {direction}: seconds to RUNNING at the new scale (median)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(m.value for m in MODES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep-logs", type=Path, default=None,
                        help="copy every log folder here")
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw rescale.png from the rescale.json in --out")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(json.loads((args.out / "rescale.json").read_text())["results"],
             args.out / "rescale.png")
        return 0
    logging.basicConfig(level=logging.WARNING)
    results = []
    for name in args.modes.split(","):
        workdir = Path(tempfile.mkdtemp(prefix=f"hp-rescale-{name}-"))
        try:
            results.append(run_mode(PythonWorkers(name), args.rounds, workdir,
                                    args.keep_logs))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'mode':<18} {'up total':>9} {'registered':>10} {'rescale':>8} "
          f"{'init->run':>9} {'py ready':>8} {'down total':>10} {'init->run':>9}")
    for r in results:
        up, down = r["up"], r["down"]
        print(f"{r['mode']:<18} {_f(up['running_s']):>9} {_f(up['registered_s']):>10} "
              f"{_f(up['rescale_end_s']):>8} {_f(up['initializing_to_running_s']):>9} "
              f"{_f(up['python_ready_s']):>8} {_f(down['running_s']):>10} "
              f"{_f(down['initializing_to_running_s']):>9}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rescale.json").write_text(json.dumps(
        {"rounds": args.rounds, "slots_per_pod": SLOTS, "results": results}, indent=2))
    plot(results, args.out / "rescale.png")
    print(f"wrote {args.out / 'rescale.json'} and rescale.png")
    return 0


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
