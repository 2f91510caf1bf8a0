"""harness-pool on a real Flink TaskManager vs Flink's own two ways to run Python.

Alternatives (three local clusters, 1 TaskManager with 4 slots each, started
side by side, jobs interleaved round by round so noise hits them alike):

- ``harness-pool``: TaskManager with ``PYTHON_LOOPBACK_SERVER_ADDRESS`` at a
  harness-pool sidecar (pyflink flavour, 4 warm workers, fork server) and
  ``python.executable`` = ``harness-pool-python`` (the fast boot);
- ``process``: Flink's default process mode (a cold ``pyflink-udf-runner.sh``
  Python process per slot's stage);
- ``loopback-threads``: ``PYTHON_LOOPBACK_SERVER_ADDRESS`` at PyFlink's own
  ``BeamFnLoopbackWorkerPoolServicer`` (one process, a thread per stage).

Measurements (medians over ``--repeats``):

- *keyed job*: submit-to-finished of a small 4-slot keyed-state PyFlink job
  (Flink's own job duration from the REST API; the ``flink run`` client JVM,
  the same for all, is reported separately);
- *cpu UDF*: records per second of a CPU-bound Python map over 4 slots
  (records / job duration).

Run: ``.venv/bin/python -m bench.bench_flink [--repeats 3]``; writes
``bench/results/flink.json`` and ``flink.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from harness_pool.demo.flink_demo import KEYED_COUNT

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CPU_UDF = HERE / "jobs" / "cpu_udf.py"
ALTERNATIVES = ("harness-pool", "process", "loopback-threads")


class Setup:
    """The three clusters and their Python worker providers."""

    def __init__(self, workdir: Path) -> None:
        from harness_pool import boot
        from harness_pool.flink.local_cluster import LocalFlinkCluster, free_port
        from harness_pool.sidecar.server import Sidecar
        from harness_pool.sidecar.settings import SidecarSettings

        self.workdir = workdir
        port = free_port()
        self.sidecar = Sidecar(SidecarSettings(port=port, workers=4, flavor="pyflink"))
        self.loopback = subprocess.Popen([sys.executable, str(HERE / "loopback_pool.py")],
                                         stdout=subprocess.PIPE, text=True)
        self.clusters: dict[str, Any] = {}
        try:
            self.sidecar.start()
            loopback_address = (self.loopback.stdout.readline() if self.loopback.stdout
                                else "").strip()
            if not loopback_address:
                raise RuntimeError("PyFlink's loopback pool did not start")
            envs = {
                "harness-pool": {"PYTHON_LOOPBACK_SERVER_ADDRESS": f"127.0.0.1:{port}"},
                "process": {},
                "loopback-threads": {"PYTHON_LOOPBACK_SERVER_ADDRESS": loopback_address},
            }
            confs = {"harness-pool": {"python.executable": boot.executable()}}
            for name, env in envs.items():
                self.clusters[name] = LocalFlinkCluster(workdir / name, slots=4, env=env,
                                                        conf=confs.get(name))
                self.clusters[name].start()
            if not self.sidecar.wait_warm(timeout=120):
                raise RuntimeError("harness-pool never got warm")
        except BaseException:
            self.stop()
            raise

    def settle(self) -> None:
        self.sidecar.wait_warm(timeout=120)

    def run(self, alt: str, script: Path, args: list[str]) -> tuple[float, float]:
        """Runs a job to the end; returns (Flink job duration, client wall time), seconds."""
        cluster = self.clusters[alt]
        t0 = time.monotonic()
        job = cluster.run_python_job(script, args)
        while True:
            info = requests.get(f"{cluster.rest_url}/jobs/{job}", timeout=10).json()
            if info["state"] in ("FINISHED", "FAILED", "CANCELED"):
                break
            time.sleep(0.1)
        wall = time.monotonic() - t0
        if info["state"] != "FINISHED":
            raise RuntimeError(f"{alt}: job {job} ended {info['state']}")
        return info["duration"] / 1000.0, wall

    def stop(self) -> None:
        for cluster in self.clusters.values():
            cluster.stop()
        self.sidecar.stop()
        if self.loopback.poll() is None:
            self.loopback.terminate()
            self.loopback.wait(timeout=30)


def measure(repeats: int, records: int, cpu_records: int, work: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="hp-bench-flink-"))
    samples: dict[str, dict[str, list[float]]] = {
        m: {a: [] for a in ALTERNATIVES}
        for m in ("keyed_job_s", "keyed_job_client_wall_s", "cpu_udf_records_per_s")
    }
    setup = Setup(workdir)
    try:
        for i in range(repeats):
            for alt in ALTERNATIVES:
                setup.settle()
                out = workdir / "out" / f"{alt}-{i}"
                duration, wall = setup.run(alt, KEYED_COUNT, [str(out), str(records)])
                samples["keyed_job_s"][alt].append(duration)
                samples["keyed_job_client_wall_s"][alt].append(wall)
                setup.settle()
                duration, _ = setup.run(alt, CPU_UDF, [str(cpu_records), str(work)])
                samples["cpu_udf_records_per_s"][alt].append(cpu_records / duration)
                print(f"round {i + 1}/{repeats} {alt}: keyed {samples['keyed_job_s'][alt][-1]:.2f}s"
                      f", cpu {samples['cpu_udf_records_per_s'][alt][-1]:.0f} rec/s",
                      file=sys.stderr)
    finally:
        setup.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return samples


def summarize(samples: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric, by_alt in samples.items():
        medians = {a: statistics.median(v) for a, v in by_alt.items()}
        out[metric] = {a: {"median": m, "samples": by_alt[a],
                           "harness_pool_vs_this": medians["harness-pool"] / m}
                       for a, m in medians.items()}
    return out


def plot(summary: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((axes[0], "keyed_job_s", "keyed job: seconds (lower is better)"),
                              (axes[1], "cpu_udf_records_per_s",
                               "CPU-bound UDF: records/s (higher is better)")):
        medians = [summary[metric][a]["median"] for a in ALTERNATIVES]
        ax.bar(ALTERNATIVES, medians, color=["tab:green", "tab:gray", "tab:orange"])
        ax.set_title(label)
    fig.suptitle("PyFlink on a 4-slot TaskManager, 2 cores: medians")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--records", type=int, default=10000, help="keyed job records")
    parser.add_argument("--cpu-records", type=int, default=2000)
    parser.add_argument("--work", type=int, default=100000, help="loop steps per CPU record")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    samples = measure(args.repeats, args.records, args.cpu_records, args.work)
    summary = summarize(samples)
    print(f"{'metric':<26} {'alternative':<17} {'median':>10} {'harness-pool / this':>20}")
    for metric, by_alt in summary.items():
        for alt, row in by_alt.items():
            print(f"{metric:<26} {alt:<17} {row['median']:>10.2f} "
                  f"{row['harness_pool_vs_this']:>19.2f}x")
    keyed = summary["keyed_job_s"]["process"]["harness_pool_vs_this"]
    cpu_lb = summary["cpu_udf_records_per_s"]["loopback-threads"]["harness_pool_vs_this"]
    cpu_proc = summary["cpu_udf_records_per_s"]["process"]["harness_pool_vs_this"]
    print(f"\nkeyed job: harness-pool takes {keyed:.2f}x process mode's time (target <= 0.8: "
          f"{'met' if keyed <= 0.8 else 'NOT met'})")
    print(f"cpu UDF: harness-pool throughput {cpu_lb:.2f}x loopback threads (target >= 1.5: "
          f"{'met' if cpu_lb >= 1.5 else 'NOT met'}), {cpu_proc:.2f}x process mode "
          f"(target >= 1.0: {'met' if cpu_proc >= 1.0 else 'NOT met'})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flink.json").write_text(json.dumps(
        {"repeats": args.repeats, "params": vars(args) | {"out": str(args.out)},
         "summary": summary}, indent=2))
    plot(summary, args.out / "flink.png")
    print(f"wrote {args.out / 'flink.json'} and flink.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
