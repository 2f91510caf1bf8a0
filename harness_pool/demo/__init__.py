"""``harness-pool demo``: the sidecar and a real Beam pipeline (or PyFlink job) end to end.

Without ``--flink``: starts a sidecar with a small pool on a free port, runs a
word count over the text shipped in ``demo/data`` with Beam's PortableRunner
(LocalJobServicer) and ``--environment_type=EXTERNAL``, prints the top words,
each stage's time to a ready worker and the pool's status table, and stops.

With ``--flink``: the same sidecar (``pyflink`` flavour) behind a real local
Flink cluster whose TaskManager points at it; see ``demo/flink_demo.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from importlib import resources
from typing import Any

_LOG = logging.getLogger("harness_pool.demo")
STOP_WORDS = ("the", "a", "and", "to", "of", "is", "it", "in", "on", "for", "with", "so", "no")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="run the sidecar and a real Beam pipeline (or, with --flink, a PyFlink job)",
        description="Start a sidecar with a small pool, run a real multi-stage Beam word count "
        "through it with the EXTERNAL environment, print results, time to a ready worker per "
        "stage and the pool status, then shut down. With --flink: a real local Flink cluster "
        "whose TaskManager's Python stages are served by the pool.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--workers", type=int, default=2, help="warm workers in the pool")
    p.add_argument("--port", type=int, default=0, help="sidecar port (0: any free port)")
    p.add_argument("--flink", action="store_true",
                   help="run a PyFlink job on a real local Flink cluster instead")
    p.add_argument("--records", type=int, default=10000, help="--flink: records in the job")
    p.add_argument("--workdir", default="", help="--flink: keep the cluster's files here")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.flink:
        from harness_pool.demo.flink_demo import run_flink_demo

        return run_flink_demo(args)
    return run_beam_demo(args.workers, args.port)


def demo_lines() -> list[str]:
    lines = []
    for entry in sorted(resources.files("harness_pool.demo").joinpath("data").iterdir(),
                        key=lambda e: e.name):
        if entry.name.endswith(".txt"):
            lines.extend(entry.read_text().splitlines())
    return [line for line in lines if line.strip()]


def word_count(p: Any, lines: list[str], out: list[tuple[str, int]] | None = None) -> Any:
    """Several stages: read, split, side-input filter, shuffle, count, top."""
    import apache_beam as beam

    stop = p | "StopWords" >> beam.Create(STOP_WORDS)
    return (
        p
        | "Lines" >> beam.Create(lines)
        | "Split" >> beam.FlatMap(lambda line: [w.strip(".,;:").lower() for w in line.split()])
        | "DropStopWords" >> beam.Filter(lambda w, stop: w and w not in stop,
                                         stop=beam.pvalue.AsList(stop))
        | "Pair" >> beam.Map(lambda w: (w, 1))
        | "Group" >> beam.GroupByKey()
        | "Count" >> beam.MapTuple(lambda w, ones: (w, sum(ones)))
        | "Top" >> beam.combiners.Top.Of(8, key=lambda kv: (kv[1], kv[0]))
    )


class _DropRelayedSdkLogs(logging.Filter):
    """Beam's local runner re-logs every SDK log entry as a text proto; the demo hides those."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("severity:")


def run_beam_demo(workers: int, port: int) -> int:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability import local_job_service, portable_runner

    from harness_pool.sidecar.cli import format_table
    from harness_pool.sidecar.server import Sidecar
    from harness_pool.sidecar.settings import SidecarSettings

    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropRelayedSdkLogs())
    sidecar = Sidecar(SidecarSettings(port=port, workers=workers, drain_timeout=5))
    address = sidecar.start()
    job_service = local_job_service.LocalJobServicer()
    try:
        t0 = time.monotonic()
        if not sidecar.wait_warm(timeout=120):
            print(f"demo: the pool did not get warm:\n{format_table(sidecar.status())}")
            return 1
        print(f"sidecar {address}: {workers} workers warm after {time.monotonic() - t0:.1f}s")
        job_port = job_service.start_grpc_server(0)
        options = PipelineOptions([
            f"--job_endpoint=localhost:{job_port}", "--environment_type=EXTERNAL",
            f"--environment_config={address}",
        ])
        t1 = time.monotonic()
        # Two jobs in a row: each gets its own fresh, already-warm process.
        with tempfile.TemporaryDirectory(prefix="hp-demo-") as out:
            for job in (1, 2):
                target = os.path.join(out, f"top-{job}.txt")
                with beam.Pipeline(runner=portable_runner.PortableRunner(),
                                   options=options) as p:
                    _ = (word_count(p, demo_lines())
                         | beam.Map(lambda t: ", ".join(f"{w} {n}" for w, n in t))
                         | beam.io.WriteToText(target, shard_name_template=""))
                with open(target) as f:
                    print(f"job {job} top words: {f.read().strip()}")
        elapsed = time.monotonic() - t1
        sidecar.pool.wait_until_no_stage(10)  # let the finished workers' exits land
        status = sidecar.status()
        print(f"\n2 jobs finished in {elapsed:.2f}s with --environment_type=EXTERNAL "
              f"--environment_config={address}")
        print("\nstages served (time from StartWorker to a ready worker):")
        for record in reversed(list(status.assignments)):
            print(f"  stage {record.runner_worker_id:<12} worker {record.pool_id:<10} "
                  f"pid {record.pid:<7} ready in {record.time_to_ready_seconds * 1000:6.1f} ms "
                  f"-> {record.outcome}")
        print()
        print(format_table(status))
        return 0
    finally:
        job_service.stop()
        sidecar.stop()
