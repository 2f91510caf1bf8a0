"""Fixed-endpoint proxy vs direct (pooled mode): throughput and added latency per bundle.

Two sidecars run side by side as separate processes (``python -m harness_pool
serve``), as they would next to a TaskManager:

- ``direct``: ``--workers 1`` pooled mode; the SDK harness talks to the
  runner's servers directly (no proxy on the data path);
- ``proxy``: ``--workers 0 --external-worker-ids sdk-1``; an unmodified
  harness booted the way Beam's container boot does it (``tests/proxy/
  fake_boot.py``, re-run when it exits like a container restart) reaches the
  runner only through the sidecar's one address.

Primary figures, at the Fn API level (``MiniRunner``: a runner reduced to
control, data, logging and one descriptor, data source -> data sink of
windowed bytes, so that the harness does the least work per element and the
path between runner and harness is what is measured). Per round and mode: one
StartWorker (the mode's worker was waited for first: warm pooled worker /
external harness held in GetProvisionInfo, so worker start-up is outside),
a warm-up bundle, then

- *added latency per bundle*: ``--bundles`` one-record bundles, each timed
  from the ProcessBundleRequest to both its response and the sink's last
  element; median. Added latency = proxy median - direct median.
- *throughput*: 3 bundles of ``--records`` records of ``--record-bytes``
  bytes (sent in ~1 MB Elements messages, echoed back by the harness);
  records/s = records / median bundle time. Ratio = proxy / direct.

Rounds alternate the order of the modes so that machine noise hits both alike.

Secondary figures, whole pipelines on Beam's FnApiRunner (EXTERNAL
environment): a shuffle of ``--records`` records (GroupByKey: every record
crosses the data plane out and back in) with
records/s = (records - 8) / (T(records) - T(8)) so per-job costs drop out
(for the proxy they include the unmodified harness's own start-up: its boot
execs a fresh Python that imports Beam after the stage is assigned, about 1 s
here; reported as ``per_job_s``), and a chain of ``--stages`` Reshuffle-
separated stages vs one stage (ms per stage). FnApiRunner's own per-stage
overhead (tens of ms) makes these far noisier than the primary figures.

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
from concurrent import futures
from pathlib import Path
from typing import Any

import apache_beam as beam
import grpc
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import (
    beam_fn_api_pb2,
    beam_fn_api_pb2_grpc,
    beam_runner_api_pb2,
    endpoints_pb2,
)
from apache_beam.runners.portability import fn_api_runner
from apache_beam.transforms import environments
from apache_beam.transforms.window import GlobalWindows

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
        self._log = open(log_dir / f"proxy-bench-{name}.log", "ab")
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


class MiniRunner:
    """The runner side of the Fn API, reduced to what a bundle needs: control, data,
    logging and GetProcessBundleDescriptor on one port, and one descriptor
    (data source -> data sink, windowed bytes). It times bundles from the
    ProcessBundleRequest to both the response and the sink's last element."""

    DESCRIPTOR_ID = "identity"

    def __init__(self) -> None:
        from apache_beam.coders import BytesCoder, WindowedValueCoder
        from apache_beam.coders.coders import GlobalWindowCoder
        from apache_beam.runners import pipeline_context
        from apache_beam.transforms import window
        from apache_beam.transforms.core import Windowing

        self._lock = threading.Lock()
        self._control: dict[str, Any] = {}  # worker id -> queue of InstructionRequest
        self._data_out: dict[str, Any] = {}  # worker id -> queue of Elements
        self._connected: dict[str, threading.Event] = {}
        self._done: dict[str, threading.Event] = {}
        self._pending: dict[str, int] = {}
        self.server = grpc.server(futures.ThreadPoolExecutor(16), options=[
            ("grpc.max_receive_message_length", 2**31 - 1),
            ("grpc.max_send_message_length", 2**31 - 1)])
        beam_fn_api_pb2_grpc.add_BeamFnControlServicer_to_server(self._ControlServicer(self),
                                                                 self.server)
        beam_fn_api_pb2_grpc.add_BeamFnDataServicer_to_server(self._DataServicer(self),
                                                              self.server)
        beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(self._LoggingServicer(),
                                                                 self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()
        ctx = pipeline_context.PipelineContext()
        coder = WindowedValueCoder(BytesCoder(), GlobalWindowCoder())
        coder_id = ctx.coders.get_id(coder)
        ws_id = ctx.windowing_strategies.get_id(Windowing(window.GlobalWindows()))
        self._impl = coder.get_impl()
        port = beam_fn_api_pb2.RemoteGrpcPort(
            api_service_descriptor=endpoints_pb2.ApiServiceDescriptor(url=self.address),
            coder_id=coder_id).SerializeToString()
        components = ctx.to_runner_api()
        self.descriptor = beam_fn_api_pb2.ProcessBundleDescriptor(
            id=self.DESCRIPTOR_ID, coders=components.coders,
            windowing_strategies=components.windowing_strategies,
            pcollections={"pc": beam_runner_api_pb2.PCollection(
                unique_name="pc", coder_id=coder_id, windowing_strategy_id=ws_id)},
            transforms={
                "source": beam_runner_api_pb2.PTransform(
                    unique_name="source", outputs={"out": "pc"},
                    spec=beam_runner_api_pb2.FunctionSpec(urn="beam:runner:source:v1",
                                                          payload=port)),
                "sink": beam_runner_api_pb2.PTransform(
                    unique_name="sink", inputs={"in": "pc"},
                    spec=beam_runner_api_pb2.FunctionSpec(urn="beam:runner:sink:v1",
                                                          payload=port))})
        self._serial = 0

    class _ControlServicer(beam_fn_api_pb2_grpc.BeamFnControlServicer):
        def __init__(self, runner: MiniRunner) -> None:
            self.r = runner

        def Control(self, request_iterator: Any, context: Any) -> Any:
            wid = dict(context.invocation_metadata())["worker_id"]
            q = self.r._queue(self.r._control, wid)
            self.r._event(wid).set()

            def read() -> None:
                for resp in request_iterator:
                    self.r._arrived(resp.instruction_id, resp.error)
            threading.Thread(target=read, daemon=True).start()
            while (item := q.get()) is not None:
                yield item

        def GetProcessBundleDescriptor(self, request: Any, context: Any) -> Any:
            return self.r.descriptor

    class _DataServicer(beam_fn_api_pb2_grpc.BeamFnDataServicer):
        def __init__(self, runner: MiniRunner) -> None:
            self.r = runner

        def Data(self, request_iterator: Any, context: Any) -> Any:
            wid = dict(context.invocation_metadata())["worker_id"]
            q = self.r._queue(self.r._data_out, wid)

            def read() -> None:
                for elements in request_iterator:
                    for d in elements.data:
                        if d.is_last:
                            self.r._arrived(d.instruction_id, "")
            threading.Thread(target=read, daemon=True).start()
            while (item := q.get()) is not None:
                yield item

    class _LoggingServicer(beam_fn_api_pb2_grpc.BeamFnLoggingServicer):
        def Logging(self, request_iterator: Any, context: Any) -> Any:
            for _ in request_iterator:
                pass
            return iter(())

    def _queue(self, table: dict[str, Any], wid: str) -> Any:
        import queue

        with self._lock:
            return table.setdefault(wid, queue.Queue())

    def _event(self, wid: str) -> threading.Event:
        with self._lock:
            return self._connected.setdefault(wid, threading.Event())

    def _arrived(self, instruction_id: str, error: str) -> None:
        if error:
            raise RuntimeError(f"bundle {instruction_id} failed: {error}")
        with self._lock:
            self._pending[instruction_id] -= 1
            done = self._pending[instruction_id] == 0
        if done:
            self._done[instruction_id].set()

    def start_worker(self, sidecar: str, wid: str) -> None:
        req = beam_fn_api_pb2.StartWorkerRequest(
            worker_id=wid,
            control_endpoint=endpoints_pb2.ApiServiceDescriptor(url=self.address),
            logging_endpoint=endpoints_pb2.ApiServiceDescriptor(url=self.address))
        with grpc.insecure_channel(sidecar) as ch:
            resp = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(ch).StartWorker(
                req, timeout=120)
        if resp.error:
            raise RuntimeError(f"StartWorker {wid}: {resp.error}")
        if not self._event(wid).wait(60):
            raise RuntimeError(f"{wid} never connected its control stream")

    def stop_worker(self, sidecar: str, wid: str) -> None:
        self._queue(self._control, wid).put(None)
        self._queue(self._data_out, wid).put(None)
        with grpc.insecure_channel(sidecar) as ch:
            beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(ch).StopWorker(
                beam_fn_api_pb2.StopWorkerRequest(worker_id=wid), timeout=30)

    def bundle(self, wid: str, records: int, record_bytes: int) -> float:
        """One bundle of ``records`` elements through the harness; returns seconds."""
        self._serial += 1
        iid = f"{wid}-b{self._serial}"
        value = self._impl.encode_nested(GlobalWindows.windowed_value(b"x" * record_bytes))
        chunk = max(1, (1 << 20) // len(value))  # about 1 MB per Elements message
        messages = []
        for start in range(0, records, chunk):
            n = min(chunk, records - start)
            messages.append(beam_fn_api_pb2.Elements(data=[beam_fn_api_pb2.Elements.Data(
                instruction_id=iid, transform_id="source", data=value * n)]))
        messages.append(beam_fn_api_pb2.Elements(data=[beam_fn_api_pb2.Elements.Data(
            instruction_id=iid, transform_id="source", is_last=True)]))
        with self._lock:
            self._pending[iid] = 2  # the response and the sink's last element
            self._done[iid] = threading.Event()
        data_q = self._queue(self._data_out, wid)
        t0 = time.perf_counter()
        self._queue(self._control, wid).put(beam_fn_api_pb2.InstructionRequest(
            instruction_id=iid, process_bundle=beam_fn_api_pb2.ProcessBundleRequest(
                process_bundle_descriptor_id=self.DESCRIPTOR_ID)))
        for m in messages:
            data_q.put(m)
        if not self._done[iid].wait(120):
            raise RuntimeError(f"bundle {iid} never finished")
        return time.perf_counter() - t0

    def stop(self) -> None:
        for table in (self._control, self._data_out):
            for q in table.values():
                q.put(None)
        self.server.stop(1).wait()


def fn_api_rounds(modes: dict[str, Mode], args: argparse.Namespace,
                  out: dict[str, dict[str, list[float]]]) -> None:
    """Per-bundle latency and large-bundle throughput on the MiniRunner, both modes."""
    runner = MiniRunner()
    try:
        for r in range(args.repeats):
            for name in (MODES if r % 2 == 0 else MODES[::-1]):
                mode = modes[name]
                mode.wait_ready()
                wid = f"bench-{name}-{r}"
                runner.start_worker(mode.address, wid)
                runner.bundle(wid, 10, args.record_bytes)  # warm-up: descriptor, data stream
                small = [runner.bundle(wid, 1, args.record_bytes) for _ in range(args.bundles)]
                big = [runner.bundle(wid, args.records, args.record_bytes) for _ in range(3)]
                runner.stop_worker(mode.address, wid)
                out[name]["small_bundle_s"].append(statistics.median(small))
                out[name]["large_bundle_s"].append(statistics.median(big))
                print(f"round {r + 1} {name:6} small bundle {statistics.median(small) * 1e3:.2f} ms"
                      f", large bundle {statistics.median(big):.3f}s", file=sys.stderr,
                      flush=True)
    finally:
        runner.stop()


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


def pipeline_rounds(modes: dict[str, Mode], args: argparse.Namespace,
                    out: dict[str, dict[str, list[float]]]) -> None:
    """Whole FnApiRunner pipelines (secondary figures; see the module docstring)."""
    for mode in modes.values():  # warm-up: first-run imports, pickling caches
        mode.wait_ready()
        run(mode.address, chain_pipeline(2))
    big = throughput_pipeline(args.records, args.record_bytes)
    base = throughput_pipeline(BASE_RECORDS, args.record_bytes)
    for r in range(args.pipeline_repeats):
        for name in (MODES if r % 2 == 0 else MODES[::-1]):
            mode = modes[name]
            for key, build in (("pipeline_s", big), ("pipeline_base_s", base),
                               ("chain_1_s", chain_pipeline(1)),
                               (f"chain_{args.stages}_s", chain_pipeline(args.stages))):
                mode.wait_ready()
                seconds = run(mode.address, build)
                out[name][key].append(seconds)
                print(f"round {r + 1} {name:6} {key:16} {seconds:.3f}s", file=sys.stderr,
                      flush=True)


def measure(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    modes = {name: Mode(name, RESULTS) for name in MODES}
    out: dict[str, dict[str, list[float]]] = {m: {
        "small_bundle_s": [], "large_bundle_s": [], "pipeline_s": [], "pipeline_base_s": [],
        "chain_1_s": [], f"chain_{args.stages}_s": []} for m in MODES}
    try:
        for mode in modes.values():
            mode.wait_ready()
        fn_api_rounds(modes, args, out)
        if args.pipeline_repeats:
            pipeline_rounds(modes, args, out)
    finally:
        for mode in modes.values():
            mode.stop()
    return out


def summarize(raw: dict[str, dict[str, list[float]]], args: argparse.Namespace,
              load: tuple[list[float], list[float]]) -> dict[str, Any]:
    med = {m: {k: statistics.median(v) for k, v in d.items() if v} for m, d in raw.items()}
    s = args.stages
    summary: dict[str, Any] = {"config": vars(args), "loadavg_before_after": load,
                               "cpus": os.cpu_count(), "medians_s": med, "raw_s": raw}
    rps = {m: args.records / med[m]["large_bundle_s"] for m in MODES}
    lat = {m: med[m]["small_bundle_s"] * 1000 for m in MODES}
    summary["large_bundle_records_per_s"] = rps
    summary["small_bundle_latency_ms"] = lat
    summary["throughput_ratio_proxy_over_direct"] = rps["proxy"] / rps["direct"]
    # Bundle times here are often bimodal (both modes); the ratio of means is shown too.
    summary["throughput_ratio_of_means"] = (statistics.mean(raw["direct"]["large_bundle_s"])
                                            / statistics.mean(raw["proxy"]["large_bundle_s"]))
    summary["added_latency_per_bundle_ms"] = lat["proxy"] - lat["direct"]
    summary["targets_met"] = {
        "throughput_ratio>=0.9": summary["throughput_ratio_proxy_over_direct"] >= 0.9,
        "added_latency_ms<=1": summary["added_latency_per_bundle_ms"] <= 1.0,
    }
    if args.pipeline_repeats:
        summary["pipeline"] = {
            "records_per_s": {m: (args.records - BASE_RECORDS) / (
                med[m]["pipeline_s"] - med[m]["pipeline_base_s"]) for m in MODES},
            "per_job_s": {m: med[m]["pipeline_base_s"] for m in MODES},
            "per_stage_ms": {m: (med[m][f"chain_{s}_s"] - med[m]["chain_1_s"]) / (s - 1) * 1000
                             for m in MODES},
        }
    return summary


def print_table(summary: dict[str, Any]) -> None:
    rps, lat = summary["large_bundle_records_per_s"], summary["small_bundle_latency_ms"]
    print("Fn API level (MiniRunner), medians:")
    print(f"{'mode':8} {'records/s (large)':>18} {'ms (1-record bundle)':>21}")
    for m in MODES:
        print(f"{m:8} {rps[m]:18.0f} {lat[m]:21.2f}")
    print(f"throughput proxy/direct: {summary['throughput_ratio_proxy_over_direct']:.3f} "
          f"(target >= 0.9); ratio of means {summary['throughput_ratio_of_means']:.3f}")
    print(f"added latency per bundle: {summary['added_latency_per_bundle_ms']:.2f} ms "
          f"(target <= 1 ms)")
    if "pipeline" in summary:
        pl = summary["pipeline"]
        print("FnApiRunner pipelines, medians (secondary):")
        for m in MODES:
            print(f"{m:8} {pl['records_per_s'][m]:10.0f} records/s  "
                  f"{pl['per_job_s'][m]:6.2f} s per job  {pl['per_stage_ms'][m]:7.1f} ms/stage")
    print(f"load average before/after: {summary['loadavg_before_after']} "
          f"on {summary['cpus']} CPUs")


def plot(summary: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    raw, records = summary["raw_s"], summary["config"]["records"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.boxplot([[records / t for t in raw[m]["large_bundle_s"]] for m in MODES],
              tick_labels=MODES)
    a.set_title(f"large bundle: {records} records x {summary['config']['record_bytes']} B")
    a.set_ylabel("records / s")
    b.boxplot([[t * 1000 for t in raw[m]["small_bundle_s"]] for m in MODES], tick_labels=MODES)
    b.set_title("1-record bundle round trip")
    b.set_ylabel("ms")
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--record-bytes", type=int, default=100)
    parser.add_argument("--stages", type=int, default=21)
    parser.add_argument("--bundles", type=int, default=200,
                        help="1-record bundles per round (median taken)")
    parser.add_argument("--pipeline-repeats", type=int, default=3,
                        help="rounds of whole FnApiRunner pipelines (0: skip)")
    args = parser.parse_args(argv)
    load_before = list(os.getloadavg())
    logging.basicConfig(level=logging.ERROR)  # the harnesses' INFO logs reach the runner
    raw = measure(args)
    summary = summarize(raw, args, (load_before, list(os.getloadavg())))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "proxy.json").write_text(json.dumps(summary, indent=2))
    plot(summary, RESULTS / "proxy.png")
    print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
