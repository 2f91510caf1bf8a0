"""Soak: many StartWorker/StopWorker cycles with real harnesses; then a burst.

- *Soak*: a ``harness-pool serve`` process (fork server, ``--workers 4``) gets
  ``--cycles`` StartWorker/StopWorker cycles from a minimal runner (real gRPC
  control and logging servers, ``bench.common.MiniRunner``): each StartWorker
  returns once a real SDK harness is connected to the runner; StopWorker ends
  it. Every ``--pipeline-every`` cycles a real Beam pipeline (FnApiRunner,
  EXTERNAL environment) runs through the same sidecar. The sidecar's RSS, open
  fds, threads and processes below it are sampled at start, every 100 cycles
  and at the end (target: flat); StartWorker latency p50/p99.
- *Burst*: a sidecar with ``--workers 16`` gets 16 simultaneous StartWorker
  calls once its 16 workers are warm; time to ready of each, p50/p99 over
  ``--bursts`` bursts (target p99 100 ms).

Run: ``.venv/bin/python -m bench.bench_soak [--cycles 10000]``; writes
``bench/results/soak.json`` and ``soak.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import MiniRunner, proc_figures, stop_worker

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """``harness-pool serve`` in its own process, so its figures are its own."""

    def __init__(self, workers: int) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        serve = str(Path(sys.executable).with_name("harness-pool"))
        self.proc = subprocess.Popen(
            [serve, "serve", "--port", str(self.port), "--workers", str(workers),
             "--max-processes", str(2 * workers), "--stop-grace", "2", "--drain-timeout", "2"],
            stderr=subprocess.DEVNULL)

    def wait_warm(self, idle: int, timeout: float = 300.0) -> None:
        from harness_pool.sidecar.cli import fetch_status

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = fetch_status(self.address, 2.0)
                if sum(1 for w in status.workers if w.state == "idle") >= idle:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"sidecar never got {idle} idle workers")

    def serving(self) -> bool:
        with grpc.insecure_channel(self.address) as ch:
            return health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=5).status == 1

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)


def pipeline(address: str) -> float:
    import apache_beam as beam
    from apache_beam.runners.portability import fn_api_runner
    from apache_beam.transforms import environments

    t0 = time.perf_counter()
    r = fn_api_runner.FnApiRunner(default_environment=environments.ExternalEnvironment(address))
    with beam.Pipeline(runner=r) as p:
        _ = (p | beam.Create(["a b", "b c"]) | beam.FlatMap(str.split)
             | beam.Map(lambda w: (w, 1)) | beam.CombinePerKey(sum))
    return time.perf_counter() - t0


def soak(cycles: int, pipeline_every: int, workers: int) -> dict[str, Any]:
    serve = ServeProcess(workers)
    runner = MiniRunner()
    latencies: list[float] = []
    samples: list[dict[str, Any]] = []
    pipelines: list[float] = []
    errors: list[str] = []
    try:
        serve.wait_warm(workers)
        start = proc_figures(serve.proc.pid)
        samples.append(dict(start, cycle=0))
        t_begin = time.perf_counter()
        for i in range(1, cycles + 1):
            wid = f"soak-{i}"
            t0 = time.perf_counter()
            error = runner.start_worker(serve.address, wid, timeout=120).error
            latencies.append(time.perf_counter() - t0)
            if error:
                errors.append(error)
            runner.release(wid)
            stop_worker(serve.address, wid)
            if i % pipeline_every == 0:
                pipelines.append(pipeline(serve.address))
            if i % 100 == 0:
                samples.append(dict(proc_figures(serve.proc.pid), cycle=i))
                print(f"cycle {i}: p50 {1000 * statistics.median(latencies[-100:]):.1f} ms, "
                      f"{samples[-1]}", flush=True)
        elapsed = time.perf_counter() - t_begin
        serve.wait_warm(workers)
        time.sleep(2.0)  # let the last exits be reaped
        end = proc_figures(serve.proc.pid)
        samples.append(dict(end, cycle=cycles))
        serving = serve.serving()
    finally:
        runner.stop()
        code = serve.stop()
    return {"cycles": cycles, "workers": workers, "seconds": elapsed, "errors": len(errors),
            "first_errors": errors[:5], "start": start, "end": end, "samples": samples,
            "start_worker_ms": _percentiles(latencies), "latencies_ms":
            [round(1000 * x, 2) for x in latencies], "pipelines_s": pipelines,
            "serving_at_end": serving, "exit_code": code}


def burst(n: int, bursts: int) -> dict[str, Any]:
    serve = ServeProcess(n)
    runner = MiniRunner(threads=4 * n)
    times: list[float] = []
    errors = 0
    try:
        for b in range(bursts):
            serve.wait_warm(n)
            barrier = threading.Barrier(n)
            out: list[float] = []

            def one(i: int, b: int = b, barrier: threading.Barrier = barrier,
                    out: list[float] = out) -> None:
                nonlocal errors
                wid = f"burst-{b}-{i}"
                barrier.wait()
                t0 = time.perf_counter()
                error = runner.start_worker(serve.address, wid, timeout=120).error
                out.append(time.perf_counter() - t0)
                errors += bool(error)

            threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(180)
            times.extend(out)
            for i in range(n):
                runner.release(f"burst-{b}-{i}")
                stop_worker(serve.address, f"burst-{b}-{i}")
    finally:
        runner.stop()
        serve.stop()
    return {"workers": n, "bursts": bursts, "errors": errors,
            "time_to_ready_ms": _percentiles(times)}


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(values), "p50": pct(0.50), "p99": pct(0.99),
            "max": round(1000 * ordered[-1], 2)}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    soak_r = result["soak"]
    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 7))
    a.plot(range(1, len(soak_r["latencies_ms"]) + 1), soak_r["latencies_ms"], ",", alpha=0.6)
    a.set_xlabel("cycle")
    a.set_ylabel("StartWorker (ms)")
    a.set_yscale("log")
    a.set_title(f"soak: {soak_r['cycles']} cycles, p50 {soak_r['start_worker_ms']['p50']} ms, "
                f"p99 {soak_r['start_worker_ms']['p99']} ms; burst of "
                f"{result['burst']['workers']}: p99 {result['burst']['time_to_ready_ms']['p99']}"
                " ms")
    cycles = [s["cycle"] for s in soak_r["samples"]]
    for key in ("fds", "threads", "processes"):
        b.plot(cycles, [s[key] for s in soak_r["samples"]], label=key)
    b2 = b.twinx()
    b2.plot(cycles, [s["rss_kib"] / 1024 for s in soak_r["samples"]], "k--", label="RSS MiB")
    b2.set_ylabel("sidecar RSS (MiB)")
    b.set_xlabel("cycle")
    b.legend(loc="upper left")
    b2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--pipeline-every", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--out", default=str(RESULTS / "soak.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = {"soak": soak(args.cycles, args.pipeline_every, args.workers),
              "burst": burst(args.burst, args.bursts)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    s, b = result["soak"], result["burst"]
    print(json.dumps({"soak": {k: s[k] for k in ("cycles", "seconds", "errors", "start", "end",
                                                  "start_worker_ms", "pipelines_s")},
                      "burst": b}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
