"""Soak: many StartWorker/StopWorker cycles with real harnesses; then a burst.

- *Soak*: a ``harness-pool serve`` process (fork server, ``--workers 4``) gets
  ``--cycles`` StartWorker/StopWorker cycles from a minimal runner (real gRPC
  control and logging servers, ``bench.common.MiniRunner``): each StartWorker
  returns once a real SDK harness is connected to the runner; StopWorker ends
  it. Every ``--pipeline-every`` cycles a real Beam pipeline (FnApiRunner,
  EXTERNAL environment) runs through the same sidecar. The sidecar's RSS, open
  fds, threads and processes below it are sampled at start, every 100 cycles
  and at the end (target: flat); StartWorker latency p50/p99.
- *Burst*: N simultaneous StartWorker calls (a job's N slots deploying at
  once), for each N of ``--burst-sizes``, side by side with Beam's own
  ``worker_pool_main`` (process mode: a cold ``python`` per call): harness-pool
  gets ``--workers N`` and the calls once its N workers are warm. Time to
  ready of each call is measured from the runner's side for both (when the
  harness's Control stream arrives), p50/p99 over ``--bursts`` bursts (target
  for N = 16: p99 100 ms), with the CPU each start cost, split by process
  (sidecar, the worker, the fork server, new processes, the runner). On a
  machine with C cores a burst of N waits for about N / C starts' CPU, so
  the sizes show the slope.

Run: ``.venv/bin/python -m bench.bench_soak [--cycles 10000]``; writes
``bench/results/soak.json`` and ``soak.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import MiniRunner, descendants, proc_figures, stop_worker

RESULTS = Path(__file__).resolve().parent / "results"
TICKS = os.sysconf("SC_CLK_TCK")


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

    def idle_pids(self) -> set[int]:
        from harness_pool.sidecar.cli import fetch_status

        return {w.pid for w in fetch_status(self.address, 5.0).workers if w.state == "idle"}

    def serving(self) -> bool:
        with grpc.insecure_channel(self.address) as ch:
            return health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=5).status == 1

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)


class BeamPoolProcess:
    """Beam's ``worker_pool_main`` in process mode: a cold SDK harness per StartWorker."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Beam's process mode runs plain `python`: make it this interpreter.
        env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
                   + os.environ.get("PATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
             f"--service_port={self.port}"], stderr=subprocess.DEVNULL, env=env)

    def wait_warm(self, idle: int, timeout: float = 120.0) -> None:
        with grpc.insecure_channel(self.address) as channel:
            grpc.channel_ready_future(channel).result(timeout)
        deadline = time.monotonic() + timeout  # the previous burst's harnesses are gone
        while len(descendants(self.proc.pid)) > 0 and time.monotonic() < deadline:
            time.sleep(0.05)

    def idle_pids(self) -> set[int]:
        return set()

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


def _cpu_by_process(root: int) -> dict[tuple[int, int], float]:
    """CPU seconds (own threads only) of ``root`` and every process below it, keyed by
    (pid, start ticks) so that a reused pid is not taken for the same process."""
    out: dict[tuple[int, int], float] = {}
    for pid in [root, *descendants(root)]:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks = int(fields[11]) + int(fields[12])  # utime + stime (proc(5) fields 14, 15)
        out[(pid, int(fields[19]))] = ticks / TICKS
    return out


def _cpu_split(root: int, workers: set[int], before: dict[tuple[int, int], float],
               after: dict[tuple[int, int], float], self_cpu: float) -> dict[str, float]:
    """Where a burst's CPU went: the sidecar, the ``workers`` that were warm before it
    (their stage start), its helpers (the fork server forking), processes new since
    (replacements) and the runner (this process: its gRPC servers and client threads)."""
    def delta(k: tuple[int, int], v: float) -> float:
        return v - before.get(k, 0.0)

    sidecar = sum(delta(k, v) for k, v in after.items() if k[0] == root)
    warm = sum(delta(k, v) for k, v in after.items() if k in before and k[0] in workers)
    helpers = sum(delta(k, v) for k, v in after.items()
                  if k in before and k[0] != root and k[0] not in workers)
    new = sum(v for k, v in after.items() if k not in before)
    return {"sidecar": sidecar, "workers": warm, "fork_server": helpers,
            "new_processes": new, "runner": self_cpu}


def burst(n: int, bursts: int, alternative: str = "harness-pool") -> dict[str, Any]:
    pool: ServeProcess | BeamPoolProcess = (
        ServeProcess(n) if alternative == "harness-pool" else BeamPoolProcess())
    runner = MiniRunner(threads=4 * n)
    times: list[float] = []
    cpu: dict[str, float] = {}
    errors = 0
    try:
        for b in range(bursts):
            pool.wait_warm(n)
            time.sleep(0.3)  # the last replacement's start-up is over
            workers = pool.idle_pids()
            before, self_before = _cpu_by_process(pool.proc.pid), time.process_time()
            barrier = threading.Barrier(n)
            starts: dict[str, float] = {}

            def one(wid: str, barrier: threading.Barrier = barrier,
                    starts: dict[str, float] = starts) -> None:
                nonlocal errors
                barrier.wait()
                starts[wid] = time.perf_counter()
                error = runner.start_worker(pool.address, wid, timeout=120).error
                arrived = not error and runner.wait_arrived(wid, 120)
                errors += not arrived

            ids = [f"burst-{b}-{i}" for i in range(n)]
            threads = [threading.Thread(target=one, args=(wid,)) for wid in ids]
            for t in threads:
                t.start()
            for t in threads:
                t.join(180)
            split = _cpu_split(pool.proc.pid, workers, before, _cpu_by_process(pool.proc.pid),
                               time.process_time() - self_before)
            for key, value in split.items():
                cpu[key] = cpu.get(key, 0.0) + value
            times.extend(runner.arrived[w] - starts[w] for w in ids
                         if w in runner.arrived and w in starts)
            for wid in ids:
                runner.release(wid)
                stop_worker(pool.address, wid)
    finally:
        runner.stop()
        pool.stop()
    starts_n = max(1, len(times))
    return {"alternative": alternative, "workers": n, "bursts": bursts, "errors": errors,
            "time_to_ready_ms": _percentiles(times),
            # CPU per start, ms, from the burst's first call to its last answer
            "cpu_ms_per_start": {k: round(1000 * v / starts_n, 1) for k, v in cpu.items()}}


def _ratio(bursts: list[dict[str, Any]], n: int, key: str) -> float | None:
    """Beam's worker pool over harness-pool, for ``n`` simultaneous calls."""
    value = {b["alternative"]: b["time_to_ready_ms"].get(key) for b in bursts
             if b["workers"] == n}
    beam, ours = value.get("beam-process"), value.get("harness-pool")
    return round(beam / ours, 1) if beam and ours else None


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
    if soak_r is None:
        fig, c = plt.subplots(1, 1, figsize=(9, 4))
        _plot_bursts(c, result["bursts"])
        fig.tight_layout()
        fig.savefig(path)
        return
    fig, (a, b, c) = plt.subplots(3, 1, figsize=(9, 10))
    _plot_bursts(c, result["bursts"])
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


def _plot_bursts(ax: Any, bursts: list[dict[str, Any]]) -> None:
    for alternative in ("harness-pool", "beam-process"):
        rows = sorted((b for b in bursts if b["alternative"] == alternative
                       and b["time_to_ready_ms"]),
                      key=lambda b: b["workers"])
        if not rows:
            continue
        sizes = [b["workers"] for b in rows]
        ax.plot(sizes, [b["time_to_ready_ms"]["p99"] for b in rows], "o-",
                label=f"{alternative} p99")
        ax.plot(sizes, [b["time_to_ready_ms"]["p50"] for b in rows], "x--",
                label=f"{alternative} p50")
    ax.axhline(100, color="grey", linestyle=":", label="target p99 (16 calls)")
    ax.set_xlabel("simultaneous StartWorker calls")
    ax.set_ylabel("time to ready (ms)")
    ax.set_yscale("log")
    ax.legend()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10_000, help="0: bursts only")
    parser.add_argument("--pipeline-every", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--burst-sizes", default="2,4,8,16")
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--beam-bursts", type=int, default=3,
                        help="bursts for Beam's worker_pool_main (seconds each)")
    parser.add_argument("--out", default=str(RESULTS / "soak.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(x) for x in args.burst_sizes.split(",")]
    result: dict[str, Any] = {
        "soak": soak(args.cycles, args.pipeline_every, args.workers) if args.cycles else None,
        "bursts": [row for n in sizes for row in (
            burst(n, args.bursts),
            *([burst(n, args.beam_bursts, "beam-process")] if args.beam_bursts else []))]}
    result["burst"] = max((b for b in result["bursts"] if b["alternative"] == "harness-pool"),
                          key=lambda b: b["workers"])
    result["ratios_beam_over_harness_pool"] = {
        str(n): {"p50": _ratio(result["bursts"], n, "p50"),
                 "p99": _ratio(result["bursts"], n, "p99")} for n in sizes}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    s = result["soak"]
    print(json.dumps({"soak": s and {k: s[k] for k in (
        "cycles", "seconds", "errors", "start", "end", "start_worker_ms", "pipelines_s")},
        "bursts": result["bursts"], "ratios": result["ratios_beam_over_harness_pool"]},
        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
