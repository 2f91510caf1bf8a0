"""Fixed-endpoint proxy vs direct (pooled mode): throughput and added latency per bundle.

Two sidecars run side by side as separate processes (``python -m harness_pool
serve``), as they would next to a TaskManager:

- ``direct``: ``--workers 1`` pooled mode; the SDK harness talks to the
  runner's servers directly (no proxy on the data path);
- ``proxy``: ``--workers 0 --external-worker-ids sdk-1``; an unmodified
  harness booted the way Beam's container boot does it (``tests/proxy/
  fake_boot.py``, re-run when it exits like a container restart) reaches the
  runner only through the sidecar's one address.

The runner is Beam's FnApiRunner in this process with the EXTERNAL
environment. Rounds alternate the two modes so that machine noise hits both
alike; before each timed run the mode's worker is waited for (warm pooled
worker / external harness held in GetProvisionInfo), so worker start-up is
outside the comparison.

- *Throughput*: one large bundle per stage: ``--records`` records of
  ``--record-bytes`` bytes made in the SDK, shuffled through the runner
  (GroupByKey: every record crosses the data plane out and back in), summed.
  records/s = (records - 8) / (T(records) - T(8)): the same pipeline with 8
  records measures what every job pays once (for the proxy mode that includes
  the unmodified harness's own start-up: its boot execs a fresh Python that
  imports Beam after the stage is assigned, about 1 s here), so the figure is
  the data path's rate. The per-job costs are reported separately.
- *Added latency per bundle*: a chain of ``--stages`` tiny stages (Reshuffle
  between them; under FnApiRunner each stage is one bundle with its own
  control round trip and data streams) against a one-stage pipeline; the
  per-bundle cost is the slope (T(stages) - T(1)) / (stages - 1). Added
  latency = proxy slope - direct slope.

Run: ``.venv/bin/python -m bench.bench_proxy [--repeats 7]``; writes
``bench/results/proxy.json`` and ``proxy.png`` (needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
import grpc
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability import fn_api_runner
from apache_beam.transforms import environments

from harness_pool.v1 import pool_pb2, pool_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FAKE_BOOT = ROOT / "tests" / "proxy" / "fake_boot.py"
MODES = ("direct", "proxy")
#: The same throughput pipeline with this many records measures the per-job costs
#: (worker start, stage set-up) that the throughput figure leaves out.
BASE_RECORDS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mode:
    """One sidecar process (and, for the proxy, one boot loop) for the whole run."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._log = open(log_dir / f"proxy-bench-{name}.log", "ab")  # noqa: SIM115
        args = ["--port", str(self.port), "--assign-timeout", "60"]
        args += ["--workers", "1"] if name == "direct" else [
            "--workers", "0", "--external-worker-ids", "sdk-1"]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.sidecar = subprocess.Popen([sys.executable, "-m", "harness_pool", "serve", *args],
                                        stdout=self._log, stderr=self._log, env=env)
        self._stop = threading.Event()
        self._boot: subprocess.Popen[bytes] | None = None
        self._boot_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._channel = grpc.insecure_channel(self.address)
        if name == "proxy":
            self._thread = threading.Thread(target=self._boot_loop, args=(env,), daemon=True)
            self._thread.start()

    def _boot_loop(self, env: dict[str, str]) -> None:
        argv = [sys.executable, str(FAKE_BOOT), "--id", "sdk-1",
                "--provision_endpoint", self.address]
        while not self._stop.is_set():
            with self._boot_lock:
                if self._stop.is_set():
                    return
                self._boot = subprocess.Popen(argv, stdout=self._log, stderr=self._log, env=env)
            self._boot.wait()
            if self._boot.returncode == 3:  # sidecar not up yet / hold expired
                self._stop.wait(0.2)

    def status(self) -> pool_pb2.PoolStatus | None:
        try:
            return pool_pb2_grpc.PoolAdminStub(self._channel).GetStatus(
                pool_pb2.GetStatusRequest(), timeout=5)
        except grpc.RpcError:
            return None

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the mode's worker can take a stage (pooled idle / external waiting)."""
        want = "idle" if self.name == "direct" else "waiting"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if st is not None and any(w.state == want for w in st.workers):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no worker {want} after {timeout:.0f}s")

    def stop(self) -> None:
        self._stop.set()
        with self._boot_lock:
            boot = self._boot
        for proc in (boot, self.sidecar):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._thread is not None:
            self._thread.join(10)
        self._channel.close()
        self._log.close()


def run(address: str, build: Any) -> float:
    runner = fn_api_runner.FnApiRunner(
        default_environment=environments.ExternalEnvironment(address))
    t0 = time.perf_counter()
    with beam.Pipeline(runner=runner, options=PipelineOptions([])) as p:
        build(p)
    return time.perf_counter() - t0


def throughput_pipeline(records: int, record_bytes: int) -> Any:
    shards = 8

    def build(p: beam.Pipeline) -> None:
        per = records // shards
        _ = (p
             | beam.Create(list(range(shards)))
             | beam.FlatMap(lambda s: ((i % 64, b"x" * record_bytes)
                                       for i in range(s * per, (s + 1) * per)))
             | beam.GroupByKey()
             | beam.MapTuple(lambda k, vs: (k, sum(len(v) for v in vs))))
    return build


def chain_pipeline(stages: int) -> Any:
    def build(p: beam.Pipeline) -> None:
        pc = p | beam.Create([1, 2, 3])
        for i in range(stages - 1):
            pc = pc | f"shuffle{i}" >> beam.Reshuffle() | f"map{i}" >> beam.Map(lambda x: x)
    return build


def measure(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    modes = {name: Mode(name, RESULTS) for name in MODES}
    out: dict[str, dict[str, list[float]]] = {
        m: {"throughput_s": [], "throughput_base_s": [], "chain_1_s": [],
            f"chain_{args.stages}_s": []} for m in MODES}
    try:
        for mode in modes.values():
            mode.wait_ready()
        for name, mode in modes.items():  # warm-up: first-run imports, pickling caches
            run(mode.address, chain_pipeline(2))
            mode.wait_ready()
        big = throughput_pipeline(args.records, args.record_bytes)
        base = throughput_pipeline(BASE_RECORDS, args.record_bytes)
        for r in range(args.repeats):
            order = MODES if r % 2 == 0 else MODES[::-1]
            for name in order:
                mode = modes[name]
                for key, build in (("throughput_s", big), ("throughput_base_s", base),
                                   ("chain_1_s", chain_pipeline(1)),
                                   (f"chain_{args.stages}_s", chain_pipeline(args.stages))):
                    mode.wait_ready()
                    seconds = run(mode.address, build)
                    out[name][key].append(seconds)
                    print(f"round {r + 1} {name:6} {key:14} {seconds:.3f}s", file=sys.stderr,
                          flush=True)
    finally:
        for mode in modes.values():
            mode.stop()
    return out


def summarize(raw: dict[str, dict[str, list[float]]], args: argparse.Namespace
              ) -> dict[str, Any]:
    med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in raw.items()}
    s = args.stages
    summary: dict[str, Any] = {"config": vars(args), "medians_s": med, "raw_s": raw}
    for m in MODES:
        summary.setdefault("records_per_s", {})[m] = (args.records - BASE_RECORDS) / (
            med[m]["throughput_s"] - med[m]["throughput_base_s"])
        summary.setdefault("per_bundle_ms", {})[m] = (
            (med[m][f"chain_{s}_s"] - med[m]["chain_1_s"]) / (s - 1) * 1000)
    rps, pb = summary["records_per_s"], summary["per_bundle_ms"]
    summary["throughput_ratio_proxy_over_direct"] = rps["proxy"] / rps["direct"]
    summary["added_latency_per_bundle_ms"] = pb["proxy"] - pb["direct"]
    summary["targets"] = {
        "throughput_ratio>=0.9": summary["throughput_ratio_proxy_over_direct"] >= 0.9,
        "added_latency_ms<=1": summary["added_latency_per_bundle_ms"] <= 1.0,
    }
    return summary


def print_table(summary: dict[str, Any]) -> None:
    rps, pb = summary["records_per_s"], summary["per_bundle_ms"]
    print(f"{'mode':8} {'records/s':>12} {'ms/bundle':>10}")
    for m in MODES:
        print(f"{m:8} {rps[m]:12.0f} {pb[m]:10.2f}")
    print(f"throughput proxy/direct: {summary['throughput_ratio_proxy_over_direct']:.3f} "
          f"(target >= 0.9)")
    print(f"added latency per bundle: {summary['added_latency_per_bundle_ms']:.2f} ms "
          f"(target <= 1 ms)")


def plot(summary: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    raw, s = summary["raw_s"], summary["config"]["stages"]
    records = summary["config"]["records"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.boxplot([[(records - BASE_RECORDS) / (t - t0) for t, t0 in
                zip(raw[m]["throughput_s"], raw[m]["throughput_base_s"])] for m in MODES],
              tick_labels=MODES)
    a.set_title(f"throughput, {records} records x {summary['config']['record_bytes']} B")
    a.set_ylabel("records / s")
    per = {m: [(c - o) / (s - 1) * 1000 for c, o in
               zip(raw[m][f"chain_{s}_s"], raw[m]["chain_1_s"])] for m in MODES}
    b.boxplot([per[m] for m in MODES], tick_labels=MODES)
    b.set_title(f"time per bundle ({s}-stage chain vs 1)")
    b.set_ylabel("ms / bundle")
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--record-bytes", type=int, default=100)
    parser.add_argument("--stages", type=int, default=21)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the harnesses' INFO logs reach the runner
    summary = summarize(measure(args), args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "proxy.json").write_text(json.dumps(summary, indent=2))
    plot(summary, RESULTS / "proxy.png")
    print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
