"""``harness-pool scheduler run|once|status`` and ``harness-pool savepoints ...``.

Thin: load the cycle file (all problems at once), build the backend, state
store and (optionally) the Lease elector from it, call the runner, map the
outcome to an exit code: 0 success, 1 cycle/command failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from harness_pool._errors import ConfigError, HarnessPoolError, PermanentError
from harness_pool.scheduler.config import CycleConfig, load_cycle
from harness_pool.scheduler.model import CycleState, SavepointRecord, SavepointStatus, derive_id
from harness_pool.scheduler.store import ConfigMapStateStore, FileStateStore, StateStore

log = logging.getLogger(__name__)


def _kube_api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return client.ApiClient()


def build(cfg: CycleConfig) -> tuple[Any, StateStore, Any]:
    """Backend, state store and leader elector (or None) for a cycle config."""
    kube = None
    if cfg.backend.type == "flink-operator" or cfg.state.type == "configmap" or cfg.state.lease:
        kube = _kube_api()
    if cfg.backend.type == "flink-rest":
        from harness_pool.scheduler.backends.flink_rest import FlinkRestBackend

        backend: Any = FlinkRestBackend(cfg.backend, cfg.savepoints.dir)
    elif cfg.backend.type == "flink-operator":
        from harness_pool.scheduler.backends.operator import OperatorBackend

        backend = OperatorBackend(kube, cfg.backend.namespace)
    else:
        from harness_pool.scheduler.backends.ververica import VervericaBackend

        backend = VervericaBackend(cfg.backend)
    if cfg.state.type == "file":
        store: StateStore = FileStateStore(cfg.state.path)
    else:
        from kubernetes import client

        store = ConfigMapStateStore(client.CoreV1Api(kube), cfg.backend.namespace,
                                    cfg.state.configmap)
    leader = None
    if cfg.state.lease:
        from kubernetes import client

        from harness_pool.scheduler.leader import LeaseElector

        leader = LeaseElector(client.CoordinationV1Api(kube), cfg.backend.namespace,
                              cfg.state.lease, f"{socket.gethostname()}-{os.getpid()}")
    return backend, store, leader


def _runner(args: argparse.Namespace) -> Any:
    from harness_pool.scheduler.runner import CycleRunner

    cfg = load_cycle(args.config)
    backend, store, leader = build(cfg)
    return CycleRunner(cfg, backend, store, leader=leader)


def _guard(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except ConfigError as exc:
            print(f"error: invalid configuration:\n{exc}")
            return 2
        except HarnessPoolError as exc:
            print(f"error: {exc}")
            return 1
    return wrapped


@_guard
def _once(args: argparse.Namespace) -> int:
    runner = _runner(args)
    state = runner.run_once()
    if state.status.value != "IDLE" or not state.cycles:
        print(json.dumps({"cycle": state.cycle_id, "ok": False,
                          "failure": f"interrupted at step {state.step_index}"}))
        return 1
    last = state.cycles[-1]
    print(json.dumps({"cycle": last.cycle_id, "ok": last.ok, "failure": last.failure,
                      "seconds": round(last.ended_at - last.started_at, 3),
                      "downtime": last.downtime}))
    return 0 if last.ok else 1


@_guard
def _run(args: argparse.Namespace) -> int:
    from harness_pool.scheduler import metrics as m

    runner = _runner(args)
    stop = threading.Event()
    runner.clock.stop = stop
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = m.serve(runner.metrics, args.metrics_port) if args.metrics_port else None
    try:
        runner.run_forever(stop)
    finally:
        if server:
            server.shutdown()
            server.server_close()
    return 0


def _describe(state: CycleState, cfg: CycleConfig) -> dict[str, Any]:
    step = None
    if state.status.value in ("RUNNING", "RECOVERING") and state.step_index < len(cfg.steps):
        s = cfg.steps[state.step_index]
        step = {"index": state.step_index, "action": s.action.value, "job": s.job,
                "phase": state.phase.value}
    return {
        "cycle": cfg.name, "status": state.status.value, "cycle_id": state.cycle_id,
        "step": step, "jobs": state.jobs, "failure": state.failure,
        "last_cycles": [c.__dict__ for c in state.cycles[-5:]],
        "savepoints": [{**r.__dict__, "status": r.status.value} for r in state.history],
    }


@_guard
def _status(args: argparse.Namespace) -> int:
    cfg = load_cycle(args.config)
    _, store, _ = build(cfg)
    print(json.dumps(_describe(store.load() or CycleState(), cfg), indent=2, default=str))
    return 0


@_guard
def _sp_list(args: argparse.Namespace) -> int:
    cfg = load_cycle(args.config)
    _, store, _ = build(cfg)
    state = store.load() or CycleState()
    for r in state.history:
        if not args.job or r.job == args.job:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.taken_at))
            print(f"{r.job}\t{when}\t{r.status.value}\t{r.path}")
    return 0


def _job(cfg: CycleConfig, name: str) -> Any:
    if name not in cfg.jobs:
        raise ConfigError(f"--job: unknown job {name!r}; known: {', '.join(sorted(cfg.jobs))}")
    return cfg.jobs[name]


@_guard
def _sp_trigger(args: argparse.Namespace) -> int:
    cfg = load_cycle(args.config)
    backend, store, _ = build(cfg)
    job = _job(cfg, args.job)
    running = backend.find_running(job)
    if len(running) != 1:
        raise PermanentError(f"job {job.name}: {len(running)} running copies; expected one")
    trigger = derive_id("manual", job.name, time.time())
    backend.trigger_savepoint(job, running[0], trigger, cfg.savepoints.dir)
    deadline = time.monotonic() + cfg.savepoints.timeout
    while time.monotonic() < deadline:
        result = backend.savepoint_status(job, running[0], trigger)
        if result.status == "COMPLETED":
            state = store.load() or CycleState()
            state.history.append(SavepointRecord(job.name, result.location, time.time(), "manual"))
            store.save(state)
            print(result.location)
            return 0
        if result.status == "FAILED":
            raise PermanentError(f"savepoint of {job.name} failed: {result.error}")
        time.sleep(0.25)
    raise PermanentError(f"savepoint of {job.name} not done in {cfg.savepoints.timeout:.0f} s")


@_guard
def _sp_dispose(args: argparse.Namespace) -> int:
    cfg = load_cycle(args.config)
    backend, store, _ = build(cfg)
    state = store.load() or CycleState()
    if args.path in state.taken.values() and state.status.value != "IDLE":
        raise PermanentError(f"{args.path} belongs to the cycle in progress; not disposing")
    backend.dispose(args.path)
    for r in state.history:
        if r.path == args.path:
            r.status = SavepointStatus.DISPOSED
    state.history = [r for r in state.history if r.status is SavepointStatus.COMPLETED]
    store.save(state)
    print(f"disposed {args.path}")
    return 0


@_guard
def _sp_resume(args: argparse.Namespace) -> int:
    cfg = load_cycle(args.config)
    backend, store, _ = build(cfg)
    job = _job(cfg, args.job)
    state = store.load() or CycleState()
    path = args.path
    if not path:
        mine = [r for r in state.history if r.job == job.name]
        if not mine:
            raise PermanentError(f"no savepoint of {job.name} in the history; pass --path")
        path = mine[-1].path
    result = backend.submit(job, derive_id("resume", job.name, path, time.time()), path,
                            job.parallelism)
    if result.duplicates:
        raise PermanentError(f"{job.name} already running as {', '.join(result.duplicates)}; "
                             "refusing to start a second copy")
    print(f"{job.name} resumed from {path} as {result.job_id}")
    return 0


def register(subparsers: Any) -> None:
    sched = subparsers.add_parser("scheduler", help="run job cycles (savepoint-safe)")
    sub = sched.add_subparsers(dest="scheduler_command", metavar="ACTION", required=True)
    for name, func, text in (("run", _run, "wait for the schedule and run cycles"),
                             ("once", _once, "run one cycle now (exit 0 only if it completed)"),
                             ("status", _status, "current step, last cycles, savepoints")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True, help="cycle file (YAML)")
        if name == "run":
            p.add_argument("--metrics-port", type=int, default=0,
                           help="serve /metrics and /healthz here (default: off; e.g. 9465)")
        p.set_defaults(func=func)
    sps = subparsers.add_parser("savepoints", help="list, trigger, dispose, resume savepoints")
    sub = sps.add_subparsers(dest="savepoints_command", metavar="ACTION", required=True)
    for name, func, text in (("list", _sp_list, "savepoint history"),
                             ("trigger", _sp_trigger, "take a savepoint of a running job"),
                             ("dispose", _sp_dispose, "dispose of a savepoint"),
                             ("resume", _sp_resume, "start a job from a savepoint")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True, help="cycle file (YAML)")
        if name != "dispose":
            p.add_argument("--job", required=name != "list", default="", help="job name")
        if name in ("dispose", "resume"):
            p.add_argument("--path", required=name == "dispose", default="",
                           help="savepoint path (resume: default the newest of the job)")
        p.set_defaults(func=func)
