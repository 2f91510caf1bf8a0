"""``harness-pool flink-cluster``: hold a real local Flink session cluster in the foreground.

``flink-cluster start --workdir DIR [--slots N] [--env K=V ...] [--conf K=V ...]``
starts one JobManager and one TaskManager (see ``local_cluster``), prints the
REST url on stdout, and stops both JVMs cleanly on SIGTERM or Ctrl-C.
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

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received signal %d; stopping the cluster", signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
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


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("flink-cluster", help="run a local Flink session cluster")
    sub = parser.add_subparsers(dest="flink_command", metavar="ACTION", required=True)
    start = sub.add_parser("start", help="start it and hold it until SIGTERM / Ctrl-C")
    start.add_argument("--workdir", required=True, help="directory for config, logs, savepoints")
    start.add_argument("--slots", type=int, default=4, help="TaskManager slots (default: 4)")
    start.add_argument("--env", action="append", default=[], metavar="K=V",
                       help="environment entry for the JobManager and TaskManager (repeatable)")
    start.add_argument("--conf", action="append", default=[], metavar="K=V",
                       help="extra Flink configuration entry (repeatable)")
    start.set_defaults(func=_start)
