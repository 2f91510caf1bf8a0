"""``harness-pool flink-cluster``: hold a real local Flink cluster in the foreground.

``flink-cluster start --workdir DIR [--slots N] [--env K=V ...] [--conf K=V ...]``
starts one JobManager and one TaskManager (see ``local_cluster``), prints the
REST url on stdout, and stops both JVMs cleanly on SIGTERM or Ctrl-C.

``flink-cluster reactive --workdir DIR --job JOB.py [--job-arg A ...] [--pods N]
[--slots N] [--python pool|pool-pyflink-boot|process]`` starts an application
cluster in reactive mode running JOB.py (see ``reactive``), prints the REST url,
then takes one command a line on stdin: ``add`` (a pod joins), ``remove [POD]
[sigterm|sigkill]`` (the newest pod by default, SIGTERM by default), ``pods``,
``stop``. SIGTERM or Ctrl-C stops everything; the end of stdin only ends the
commands.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from harness_pool._errors import ConfigError, HarnessPoolError

log = logging.getLogger(__name__)


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    problems = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            problems.append(f"{flag} {item!r}: expected KEY=VALUE")
        else:
            out[key] = value
    if problems:
        raise ConfigError(problems)
    return out


def _start(args: argparse.Namespace) -> int:
    from harness_pool.flink.local_cluster import LocalFlinkCluster

    try:
        env = _pairs(args.env, "--env")
        conf = _pairs(args.conf, "--conf")
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    stop = threading.Event()
    previous = _hold(stop)
    cluster = LocalFlinkCluster(Path(args.workdir), slots=args.slots, env=env, conf=conf)
    try:
        cluster.start()
        print(cluster.rest_url, flush=True)
        while not stop.wait(0.5):
            pass
        return 0
    except HarnessPoolError as exc:
        print(f"error: {exc}")
        return 1
    finally:
        cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _hold(stop: threading.Event) -> dict[int, Any]:
    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received signal %d; stopping the cluster", signum)
        stop.set()

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}


def _reactive(args: argparse.Namespace) -> int:
    from harness_pool.flink.pod import PythonWorkers
    from harness_pool.flink.reactive import ReactiveCluster, ReactiveSettings
    from harness_pool.flink.reactive_cli import CommandReader

    try:
        settings = ReactiveSettings(
            job=Path(args.job).resolve(), job_args=tuple(args.job_arg), slots_per_pod=args.slots,
            python=PythonWorkers(args.python), conf=_pairs(args.conf, "--conf")).validate()
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    stop = threading.Event()
    previous = _hold(stop)
    cluster = ReactiveCluster(Path(args.workdir), settings)
    try:
        cluster.start(pods=args.pods)
        print(cluster.rest_url, flush=True)
        reader = CommandReader(cluster, stop)
        reader.start()
        while not stop.wait(0.2):
            reader.run_pending()
        return 0
    except HarnessPoolError as exc:
        print(f"error: {exc}", flush=True)
        return 1
    finally:
        cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("flink-cluster",
                                   help="run a local Flink cluster (session, or reactive)")
    sub = parser.add_subparsers(dest="flink_command", metavar="ACTION", required=True)
    start = sub.add_parser("start", help="start it and hold it until SIGTERM / Ctrl-C")
    start.add_argument("--workdir", required=True, help="directory for config, logs, savepoints")
    start.add_argument("--slots", type=int, default=4, help="TaskManager slots (default: 4)")
    start.add_argument("--env", action="append", default=[], metavar="K=V",
                       help="environment entry for the JobManager and TaskManager (repeatable)")
    start.add_argument("--conf", action="append", default=[], metavar="K=V",
                       help="extra Flink configuration entry (repeatable)")
    start.set_defaults(func=_start)
    reactive = sub.add_parser(
        "reactive", help="an application cluster in reactive mode; add and remove pods",
        description="Start a Flink application cluster in reactive mode running one PyFlink "
        "job, with N pods (a TaskManager and its own harness-pool sidecar each). Prints the "
        "REST url, then reads commands on stdin, one a line: add | remove [POD] "
        "[sigterm|sigkill] | pods | stop.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    reactive.add_argument("--workdir", required=True, help="directory for config, logs, pods")
    reactive.add_argument("--job", required=True, help="the PyFlink script (PythonDriver -py)")
    reactive.add_argument("--job-arg", action="append", default=[], metavar="ARG",
                          help="argument for the job (repeatable, in order)")
    reactive.add_argument("--pods", type=int, default=1, help="pods to start with")
    reactive.add_argument("--slots", type=int, default=2, help="slots of each TaskManager")
    reactive.add_argument("--python", default="pool",
                          choices=("pool", "pool-pyflink-boot", "process"),
                          help="pool: each pod's sidecar and the fast boot; pool-pyflink-boot: "
                          "the sidecar with PyFlink's own boot; process: PyFlink's process mode")
    reactive.add_argument("--conf", action="append", default=[], metavar="K=V",
                          help="extra Flink configuration entry (repeatable)")
    reactive.set_defaults(func=_reactive)
