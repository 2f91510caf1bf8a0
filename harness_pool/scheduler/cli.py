"""``harness-pool scheduler run|once|status`` and ``harness-pool savepoints ...``.

Thin: load the cycle file (all problems at once), build the backend, state
store and actor lock from it, call the runner, map the outcome to an exit
code: 0 success, 1 cycle/command failed, 2 bad input.

``savepoints trigger|resume|dispose`` never touch the state themselves: they
put a request into the store's inbox. If a scheduler is acting (it holds the
Lease or the state file's lock) it runs the request between cycles and the
command waits for the result; if none is, the command becomes the actor,
finishes any cycle left in progress, runs the request and lets go.
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
import uuid
from typing import Any

from harness_pool._errors import ConfigError, HarnessPoolError, PermanentError
from harness_pool.scheduler.config import CycleConfig, load_cycle
from harness_pool.scheduler.leader import Actor, Always, FileLock
from harness_pool.scheduler.model import CycleState, Request, RequestKind, RequestStatus
from harness_pool.scheduler.store import ConfigMapStateStore, FileStateStore, StateStore

log = logging.getLogger(__name__)


def _kube_api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return client.ApiClient()


def identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def build(cfg: CycleConfig, kube: Any = None) -> tuple[Any, StateStore, Actor]:
    """Backend, state store and actor lock for a cycle config."""
    if kube is None and (cfg.backend.type == "flink-operator" or cfg.state.type == "configmap"
                         or cfg.state.lease):
        kube = _kube_api()
    if cfg.backend.type == "flink-rest":
        from harness_pool.scheduler.backends.flink_rest import FlinkRestBackend

        backend: Any = FlinkRestBackend(cfg.backend, cfg.savepoints.dir)
    elif cfg.backend.type == "flink-operator":
        from harness_pool.scheduler.backends.operator import OperatorBackend

        backend = OperatorBackend(kube, cfg.backend)
    else:
        from harness_pool.scheduler.backends.ververica import VervericaBackend

        backend = VervericaBackend(cfg.backend)
    timeout = cfg.backend.request_timeout
    if cfg.state.type == "file":
        store: StateStore = FileStateStore(cfg.state.path)
    else:
        from kubernetes import client

        store = ConfigMapStateStore(client.CoreV1Api(kube), cfg.backend.namespace,
                                    cfg.state.configmap, timeout)
    actor: Actor
    if cfg.state.lease:
        from kubernetes import client

        from harness_pool.scheduler.leader import LeaseElector

        s = cfg.state
        actor = LeaseElector(client.CoordinationV1Api(kube), cfg.backend.namespace, s.lease,
                             identity(), s.lease_duration, s.renew_deadline, s.retry_period,
                             request_timeout=min(timeout, s.renew_deadline / 2))
    elif cfg.state.type == "file":
        actor = FileLock(cfg.state.path, identity())
    else:
        actor = Always()
    return backend, store, actor


def _runner(cfg: CycleConfig) -> Any:
    from harness_pool.scheduler.runner import CycleRunner

    backend, store, actor = build(cfg)
    return CycleRunner(cfg, backend, store, actor=actor)


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


def _become_actor(cfg: CycleConfig, actor: Actor, patience: float) -> bool:
    """Try to become the actor for up to ``patience`` seconds (a dead holder's Lease
    must go unrenewed for lease_duration on our clock before we may take it)."""
    deadline = time.monotonic() + patience
    while True:
        if actor.try_acquire():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(cfg.state.retry_period, max(0.0, deadline - time.monotonic())))


@_guard
def _once(args: argparse.Namespace) -> int:
    cfg = load_cycle(args.config)
    runner = _runner(cfg)
    patience = cfg.state.lease_duration + cfg.state.retry_period if cfg.state.lease else 0.0
    if not _become_actor(cfg, runner.actor, patience):
        raise PermanentError(f"another scheduler acts ({runner.actor.holder()}); it runs the "
                             "cycles, not this command")
    runner.actor.start()
    try:
        state = runner.run_once()
    finally:
        runner.actor.release()
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

    runner = _runner(load_cycle(args.config))
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
    plan_steps = state.plan.steps if state.plan else cfg.steps
    if state.status.value in ("RUNNING", "RECOVERING") and state.step_index < len(plan_steps):
        s = plan_steps[state.step_index]
        step = {"index": state.step_index, "action": s.action.value, "job": s.job,
                "phase": state.phase.value}
    return {
        "cycle": cfg.name, "status": state.status.value, "kind": state.kind.value,
        "cycle_id": state.cycle_id, "step": step, "jobs": state.jobs, "failure": state.failure,
        "last_cycles": [{**c.__dict__, "kind": c.kind.value} for c in state.cycles[-5:]],
        "requests": [r.to_dict() for r in state.requests[-10:]],
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


def _request(args: argparse.Namespace, kind: RequestKind) -> int:
    cfg = load_cycle(args.config)
    job = getattr(args, "job", "") or ""
    if job and job not in cfg.jobs:
        raise ConfigError(f"--job: unknown job {job!r}; known: {', '.join(sorted(cfg.jobs))}")
    runner = _runner(cfg)
    req = Request(uuid.uuid4().hex[:16], kind, job=job, path=getattr(args, "path", "") or "",
                  submitted_at=time.time())
    runner.store.submit(req)
    log.info("request %s (%s %s) submitted", req.id, kind.value, job or req.path)
    wait = args.wait if args.wait is not None else cfg.savepoints.timeout + 300.0
    deadline = time.monotonic() + wait
    told = False
    while True:
        if runner.actor.try_acquire():
            runner.actor.start()
            try:
                state = runner.run_requests(req.id)
            finally:
                runner.actor.release()
        else:
            if not told:
                print(f"request {req.id} queued; {runner.actor.holder()} runs it when no "
                      "cycle is in progress", flush=True)
                told = True
            state = runner.store.load() or CycleState()
        mine = state.request(req.id)
        if mine is not None and mine.status in (RequestStatus.DONE, RequestStatus.FAILED):
            print(mine.result)
            return 0 if mine.status is RequestStatus.DONE else 1
        if time.monotonic() >= deadline:
            raise PermanentError(f"request {req.id} not finished within {wait:.0f} s; it stays "
                                 "queued (see scheduler status)")
        time.sleep(1.0)


@_guard
def _sp_trigger(args: argparse.Namespace) -> int:
    return _request(args, RequestKind.SAVEPOINT)


@_guard
def _sp_dispose(args: argparse.Namespace) -> int:
    return _request(args, RequestKind.DISPOSE)


@_guard
def _sp_resume(args: argparse.Namespace) -> int:
    return _request(args, RequestKind.RESUME)


def register(subparsers: Any) -> None:
    sched = subparsers.add_parser("scheduler", help="run job cycles (savepoint-safe)")
    sub = sched.add_subparsers(dest="scheduler_command", metavar="ACTION", required=True)
    for name, func, text in (("run", _run, "wait for the schedule and run cycles and "
                              "manual requests (only while holding the Lease / state lock)"),
                             ("once", _once, "run one cycle now, or finish the one in "
                              "progress (exit 0 only if it completed)"),
                             ("status", _status, "current step, last cycles, requests, "
                              "savepoints")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", required=True, help="cycle file (YAML)")
        if name == "run":
            p.add_argument("--metrics-port", type=int, default=0,
                           help="serve /metrics and /healthz here (default: off; e.g. 9465)")
        p.set_defaults(func=func)
    sps = subparsers.add_parser(
        "savepoints", help="list savepoints; trigger, dispose, resume through the scheduler",
        description="trigger, dispose and resume are requests run by the acting scheduler "
        "between cycles (or by this command when no scheduler acts)")
    sub = sps.add_subparsers(dest="savepoints_command", metavar="ACTION", required=True)
    queued = (" (a request: the acting scheduler runs it between cycles; when none acts, "
              "this command does)")
    for name, func, text in (("list", _sp_list, "savepoint history"),
                             ("trigger", _sp_trigger, "take a savepoint of a running job"),
                             ("dispose", _sp_dispose, "dispose of a savepoint"),
                             ("resume", _sp_resume, "start a job from a savepoint")):
        p = sub.add_parser(name, help=text,
                           description=text + ("" if name == "list" else queued))
        p.add_argument("--config", required=True, help="cycle file (YAML)")
        if name != "dispose":
            p.add_argument("--job", required=name != "list", default="", help="job name")
        if name in ("dispose", "resume"):
            p.add_argument("--path", required=name == "dispose", default="",
                           help="savepoint path (resume: default the newest of the job)")
        if name != "list":
            p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                           help="how long to wait for the result (default: savepoints.timeout "
                           "+ 5 min); the request stays queued after that")
        p.set_defaults(func=func)
