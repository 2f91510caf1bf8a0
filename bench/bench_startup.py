"""Time to a ready SDK worker, and end-to-end time of a short pipeline, side by side.

Alternatives, measured in one run, interleaved round by round so that machine
noise hits them alike:

- ``harness-pool``: the sidecar with a warm pool (``Sidecar``, beam flavour);
- ``beam-process``: Beam's ``worker_pool_main`` in process mode (a cold
  ``python`` per StartWorker);
- ``beam-thread``: Beam's ``worker_pool_main`` in thread mode (a thread in
  the pool's process: fast, but no isolation between jobs).

*Time to ready* is measured from the runner's side, the same way for all
three: a minimal runner (real gRPC control and logging servers) sends
StartWorker and stops the clock when the SDK harness's Control stream
arrives with the runner's worker id. *End to end* is a real three-element,
two-stage pipeline on Beam's FnApiRunner with the EXTERNAL environment.
Between rounds the pool is allowed to get warm again (steady state: jobs
spaced further apart than a worker's ~1 s warm-up).

Run: ``.venv/bin/python -m bench.bench_startup [--repeats 15]``; writes
``bench/results/startup.json`` and ``startup.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, endpoints_pb2

RESULTS = Path(__file__).resolve().parent / "results"
ALTERNATIVES = ("harness-pool", "beam-process", "beam-thread")


class MiniRunner:
    """Control and logging servers: records when each worker's Control stream arrives."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self._events: dict[str, threading.Event] = {}
        self._release: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        runner = self

        class Control(beam_fn_api_pb2_grpc.BeamFnControlServicer):
            def Control(self, request_iterator: Any, context: Any) -> Any:
                wid = dict(context.invocation_metadata()).get("worker_id", "")
                now = time.perf_counter()
                with runner._lock:
                    runner.arrived[wid] = now
                    runner._event(wid).set()
                    release = runner._release.setdefault(wid, threading.Event())
                release.wait(30)
                return iter(())

        class Logging(beam_fn_api_pb2_grpc.BeamFnLoggingServicer):
            def Logging(self, request_iterator: Any, context: Any) -> Any:
                for _ in request_iterator:
                    pass
                return iter(())

        self.server = grpc.server(futures.ThreadPoolExecutor(32))
        beam_fn_api_pb2_grpc.add_BeamFnControlServicer_to_server(Control(), self.server)
        beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(Logging(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _event(self, wid: str) -> threading.Event:
        return self._events.setdefault(wid, threading.Event())

    def time_to_ready(self, pool_address: str, wid: str) -> float:
        with self._lock:
            event = self._event(wid)
        url = f"127.0.0.1:{self.port}"
        request = beam_fn_api_pb2.StartWorkerRequest(
            worker_id=wid,
            control_endpoint=endpoints_pb2.ApiServiceDescriptor(url=url),
            logging_endpoint=endpoints_pb2.ApiServiceDescriptor(url=url),
        )
        with grpc.insecure_channel(pool_address) as channel:
            stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)
            grpc.channel_ready_future(channel).result(timeout=10)
            t0 = time.perf_counter()
            response = stub.StartWorker(request, timeout=120)
            if response.error:
                raise RuntimeError(response.error)
            if not event.wait(120):
                raise RuntimeError(f"{wid} never connected")
            ready = self.arrived[wid] - t0
            with self._lock:
                self._release.setdefault(wid, threading.Event()).set()
            stub.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id=wid), timeout=30)
        return ready

    def stop(self) -> None:
        with self._lock:
            for event in self._release.values():
                event.set()
        self.server.stop(0).wait()


def run_pipeline(address: str) -> float:
    import apache_beam as beam
    from apache_beam.runners.portability import fn_api_runner
    from apache_beam.testing.util import assert_that, equal_to
    from apache_beam.transforms import environments

    t0 = time.perf_counter()
    runner = fn_api_runner.FnApiRunner(
        default_environment=environments.ExternalEnvironment(address))
    with beam.Pipeline(runner=runner) as p:
        out = (p | beam.Create(["a", "b", "a"]) | beam.Map(lambda w: (w, 1))
               | beam.GroupByKey() | beam.MapTuple(lambda w, ones: (w, len(ones))))
        assert_that(out, equal_to([("a", 2), ("b", 1)]))
    return time.perf_counter() - t0


class Pools:
    """The three alternatives, started once for the whole run."""

    def __init__(self) -> None:
        from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

        from harness_pool.sidecar.server import Sidecar
        from harness_pool.sidecar.settings import SidecarSettings

        # Beam's process mode runs plain `python`: make it this interpreter.
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
        self.sidecar = Sidecar(SidecarSettings(port=0, workers=2, drain_timeout=2))
        self.address = {"harness-pool": self.sidecar.start()}
        self._servers = []
        for name, use_process in (("beam-process", True), ("beam-thread", False)):
            address, server = BeamFnExternalWorkerPoolServicer.start(
                use_process=use_process, port=0, state_cache_size=0,
                data_buffer_time_limit_ms=-1)
            self.address[name] = address
            self._servers.append(server)
        if not self.sidecar.wait_warm(timeout=120):
            raise RuntimeError("harness-pool never got warm")

    def settle(self) -> None:
        """Steady state between rounds: the pool has replaced the workers it used."""
        self.sidecar.wait_warm(timeout=60)

    def stop(self) -> None:
        for server in self._servers:
            server.stop(0).wait()
        self.sidecar.stop()


def measure(repeats: int) -> dict[str, dict[str, list[float]]]:
    pools = Pools()
    runner = MiniRunner()
    results: dict[str, dict[str, list[float]]] = {
        "time_to_ready_s": {a: [] for a in ALTERNATIVES},
        "end_to_end_s": {a: [] for a in ALTERNATIVES},
    }
    try:
        for alt in ALTERNATIVES:  # one warm-up of each, not recorded
            run_pipeline(pools.address[alt])
        for i in range(repeats):
            for alt in ALTERNATIVES:
                pools.settle()
                results["time_to_ready_s"][alt].append(
                    runner.time_to_ready(pools.address[alt], f"{alt}-{i}"))
                pools.settle()
                results["end_to_end_s"][alt].append(run_pipeline(pools.address[alt]))
            print(f"round {i + 1}/{repeats} done", file=sys.stderr)
    finally:
        runner.stop()
        pools.stop()
    return results


def summarize(results: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for metric, by_alt in results.items():
        medians = {alt: statistics.median(v) for alt, v in by_alt.items()}
        base = medians["harness-pool"]
        summary[metric] = {
            alt: {"median": m, "min": min(by_alt[alt]), "max": max(by_alt[alt]),
                  "ratio_to_harness_pool": m / base}
            for alt, m in medians.items()
        }
    return summary


def print_table(summary: dict[str, Any]) -> None:
    print(f"{'metric':<16} {'alternative':<14} {'median':>10} {'min':>10} {'max':>10} "
          f"{'x harness-pool':>15}")
    for metric, by_alt in summary.items():
        for alt, row in by_alt.items():
            print(f"{metric:<16} {alt:<14} {row['median'] * 1000:>8.1f}ms "
                  f"{row['min'] * 1000:>8.1f}ms {row['max'] * 1000:>8.1f}ms "
                  f"{row['ratio_to_harness_pool']:>14.1f}x")


def plot(results: dict[str, dict[str, list[float]]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (metric, by_alt) in zip(axes, results.items(), strict=False):
        ax.boxplot([[v * 1000 for v in by_alt[a]] for a in ALTERNATIVES], tick_labels=ALTERNATIVES)
        ax.set_yscale("log")
        ax.set_ylabel("milliseconds (log scale)")
        ax.set_title(metric.replace("_s", "").replace("_", " "))
    fig.suptitle("harness-pool vs Beam worker_pool_main (process / thread mode)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None,
         measure_fn: Callable[[int], dict[str, dict[str, list[float]]]] = measure) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    results = measure_fn(args.repeats)
    summary = summarize(results)
    print_table(summary)
    ready = summary["time_to_ready_s"]
    target = ready["beam-process"]["median"] / ready["harness-pool"]["median"]
    print(f"\ntime to ready: harness-pool is {target:.0f}x shorter than process mode "
          f"(target >= 20x: {'met' if target >= 20 else 'NOT met'})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.json").write_text(json.dumps(
        {"repeats": args.repeats, "samples": results, "summary": summary}, indent=2))
    plot(results, args.out / "startup.png")
    print(f"wrote {args.out / 'startup.json'} and startup.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
