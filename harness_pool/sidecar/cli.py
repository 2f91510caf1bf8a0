"""``harness-pool serve``, ``harness-pool status`` and the internal ``harness-pool worker``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

import grpc
from google.protobuf import json_format

from harness_pool._errors import ConfigError, PermanentError
from harness_pool.deps.settings import DepsSettings, parse_size
from harness_pool.sidecar.settings import SidecarSettings
from harness_pool.v1 import pool_pb2, pool_pb2_grpc

_LOG = logging.getLogger("harness_pool.sidecar")


def register(sub: Any) -> None:
    d = SidecarSettings()
    p = sub.add_parser(
        "serve", help="run the sidecar (StartWorker service + warm worker pool) until SIGTERM",
        description="Serve Beam's BeamFnExternalWorkerPool on one fixed address and keep a pool "
        "of warm SDK worker processes, one per stage, replaced after each use. Point Beam at it "
        "with --environment_type=EXTERNAL --environment_config=HOST:PORT, or a Flink "
        "TaskManager with PYTHON_LOOPBACK_SERVER_ADDRESS=HOST:PORT.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default=d.host, help="address to bind")
    p.add_argument("--port", type=int, default=d.port, help="port to bind (0: any free port)")
    p.add_argument("--workers", type=_workers, default=d.workers,
                   help="warm workers kept idle (match the TaskManager's slot count); 'auto': "
                   "taskmanager.numberOfTaskSlots from the Flink configuration in "
                   "--flink-conf-dir")
    p.add_argument("--max-processes", type=int, default=d.max_processes,
                   help="cap on worker processes alive at once; 0 = 2 x --workers (after "
                   "'auto' is resolved)")
    p.add_argument("--flavor", choices=("beam", "pyflink"), default=d.flavor,
                   help="beam: stock Python SDK harness; pyflink: also PyFlink's operations")
    p.add_argument("--spawn", choices=("fork", "exec"), default=d.spawn,
                   help="fork: fork workers from a process that imported Beam once "
                   "(fast replacements); exec: a fresh interpreter per worker")
    p.add_argument("--assign-timeout", type=float, default=d.assign_timeout,
                   help="seconds StartWorker waits for an idle worker before answering an error")
    p.add_argument("--start-timeout", type=float, default=d.start_timeout,
                   help="seconds an assigned worker may take to connect to the runner")
    p.add_argument("--provision-timeout", type=float, default=d.provision_timeout,
                   help="deadline of GetProvisionInfo on the runner's provision endpoint")
    p.add_argument("--drain-timeout", type=float, default=d.drain_timeout,
                   help="on SIGTERM, seconds running stages may go on before being stopped")
    p.add_argument("--stop-grace", type=float, default=d.stop_grace,
                   help="SIGTERM to SIGKILL grace for a worker process")
    p.add_argument("--id-prefix", default=d.id_prefix, help="pool worker ids are PREFIX-N")
    p.add_argument("--external-worker-ids", default="",
                   help="fixed-endpoint mode: comma-separated ids of unmodified SDK harness "
                   "containers allowed to connect (started with --id=ID)")
    p.add_argument("--fn-api-port", type=int, default=d.fn_api_port,
                   help="fixed-endpoint mode: serve the SDK-facing Fn API on this separate port "
                   "(the endpoints harnesses are given name it); 0 = the main port")
    p.add_argument("--provision-hold-timeout", type=float, default=d.provision_hold_timeout,
                   help="fixed-endpoint mode: seconds GetProvisionInfo from an unassigned "
                   "external worker is held before UNAVAILABLE")
    p.add_argument("--health-port", type=int, default=d.health_port,
                   help="extra port serving only gRPC health (for Kubernetes probes), so "
                   "--host can stay on loopback; 0 = health only on --port")
    p.add_argument("--health-host", default=d.health_host,
                   help="address the --health-port listener binds")
    p.add_argument("--metrics-port", type=int, default=d.metrics_port,
                   help="Prometheus /metrics port; 0 disables")
    p.add_argument("--metrics-host", default=d.metrics_host,
                   help="address /metrics binds (default: --host)")
    p.add_argument("--admin-address", default=d.admin_address,
                   help="where RecycleWorker is served: unix:/path (reachable only by "
                   "containers that mount it) or HOST:PORT; empty: nowhere")
    p.add_argument("--max-message-mib", type=int, default=d.max_message_mib,
                   help="largest gRPC message accepted or sent, in MiB")
    p.add_argument("--max-concurrent-rpcs", type=int, default=d.max_concurrent_rpcs,
                   help="calls served at once on the main port (more: RESOURCE_EXHAUSTED); "
                   "0 = 64 + 16 per external worker id")
    p.add_argument("--keepalive-time", type=float, default=d.keepalive_time,
                   help="seconds of silence before the sidecar pings a client connection")
    p.add_argument("--keepalive-timeout", type=float, default=d.keepalive_timeout,
                   help="seconds a pinged client has to answer before its connection closes")
    p.add_argument("--first-message-timeout", type=float, default=d.first_message_timeout,
                   help="seconds a stream that must speak first (a worker's Attach, a data or "
                   "state stream without a usable worker_id header) may stay silent")
    p.add_argument("--liveness-timeout", type=float, default=d.liveness_timeout,
                   help="liveness fails when the pool's supervisor loop has not beaten this long")
    p.add_argument("--reap-orphans", choices=("auto", "on", "off"), default=d.reap_orphans,
                   help="reap orphaned processes of user code: auto = when PID 1 or already a "
                   "child subreaper; on = become a child subreaper and reap")
    _add_deps_flags(p)
    # -- issue 13: the TaskManager's slots, its vanishing, per-slot usage
    p.add_argument("--flink-conf-dir", default=d.flink_conf_dir,
                   help="Flink configuration folder (config.yaml or legacy flink-conf.yaml) "
                   "that --workers auto reads; empty = $FLINK_CONF_DIR")
    p.add_argument("--runner-check-interval", type=float, default=d.runner_check_interval,
                   help="seconds between TCP probes of the control endpoint of every stage a "
                   "worker holds")
    p.add_argument("--runner-lost-after", type=float, default=d.runner_lost_after,
                   help="a stage whose control endpoint refused connections this long lost "
                   "its runner (TaskManager gone): its worker is stopped and replaced, within "
                   "runner-lost-after + runner-check-interval + stop-grace seconds of the "
                   "TaskManager vanishing")
    p.add_argument("--usage-interval", type=float, default=d.usage_interval,
                   help="seconds between /proc readings of the workers holding a stage, for "
                   "harness_pool_worker_cpu_seconds_total and _rss_bytes{slot}")
    p.set_defaults(func=cmd_serve)

    s = sub.add_parser("status", help="print the workers of a running sidecar",
                       description="Ask a running sidecar for its workers and recent stages.")
    s.add_argument("--address", default=f"127.0.0.1:{d.port}", help="the sidecar's HOST:PORT")
    s.add_argument("--json", action="store_true", help="print JSON for machines")
    s.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    s.set_defaults(func=cmd_status)

    r = sub.add_parser(
        "recycle", help="stop a pooled worker now (it is replaced); on the admin address only",
        description="Ask a running sidecar to stop one pooled worker (a warm replacement takes "
        "its place; a stage it was serving fails). Served only on the sidecar's "
        "--admin-address, e.g. a Unix socket in a volume only the sidecar's container mounts: "
        "kubectl exec -c harness-pool POD -- harness-pool recycle --address "
        "unix:/run/harness-pool/admin.sock worker-3",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("pool_id", help="the pool worker id, as 'harness-pool status' lists it")
    r.add_argument("--address", default="unix:/run/harness-pool/admin.sock",
                   help="the sidecar's --admin-address")
    r.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    r.set_defaults(func=cmd_recycle)

    w = sub.add_parser("worker", help="(internal) one pooled worker; the sidecar starts these")
    w.add_argument("--sidecar", required=True)
    w.add_argument("--pool-id", required=True)
    w.add_argument("--flavor", choices=("beam", "pyflink"), default="beam")
    w.add_argument("--token-stdin", action="store_true")
    w.set_defaults(func=cmd_worker)


def _add_deps_flags(p: argparse.ArgumentParser) -> None:
    """Job dependencies (issue 9; docs/dependencies.md)."""
    d = DepsSettings()
    g = p.add_argument_group("job dependencies (Beam artifacts, PyFlink environments)")
    g.add_argument("--env-cache-dir", default=d.cache_dir,
                   help="the pod's environment cache (mount an emptyDir with a sizeLimit "
                   "here); default: $HARNESS_POOL_ENV_CACHE_DIR if set")
    g.add_argument("--env-cache-size", default="2Gi",
                   help="evict idle environments and artifacts above this size (512Mi, 2Gi; "
                   "0 = unbounded); keep it below the volume's sizeLimit by the largest job "
                   "environment")
    g.add_argument("--pip-timeout", type=float, default=d.pip_timeout,
                   help="seconds one pip run may take")
    g.add_argument("--prepare-timeout", type=float, default=d.prepare_timeout,
                   help="seconds a stage may spend preparing its job's dependencies (downloads, "
                   "waiting for another worker's build, pip); the start timeout counts after it")
    g.add_argument("--artifact-call-timeout", type=float, default=d.call_timeout,
                   help="seconds one call to the runner's artifact service may take")
    g.add_argument("--interpreter-idle-timeout", type=float, default=d.interpreter_idle,
                   help="stop the fork server of a job's own interpreter after this many "
                   "seconds without a worker")
    g.add_argument("--job-interpreters", choices=("archives", "any", "off"),
                   default=d.job_interpreters,
                   help="which interpreters a stage may ask for (PyFlink python.executable): "
                   "archives = only inside the job's python.archives; any = every one the "
                   "sidecar can run; off = always the pool's")


def deps_from_args(args: argparse.Namespace) -> DepsSettings:
    try:
        size = parse_size(args.env_cache_size)
    except ValueError as exc:
        raise ConfigError(f"--env-cache-size: {exc}") from exc
    return DepsSettings(cache_dir=args.env_cache_dir, cache_size=size,
                        pip_timeout=args.pip_timeout, prepare_timeout=args.prepare_timeout,
                        call_timeout=args.artifact_call_timeout,
                        interpreter_idle=args.interpreter_idle_timeout,
                        job_interpreters=args.job_interpreters)


def _workers(value: str) -> int | str:
    """``--workers``: a number, or ``auto`` (resolved by ``settings_from_args``)."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{value}' is neither a number of workers nor 'auto'") from None


def settings_from_args(args: argparse.Namespace) -> SidecarSettings:
    """Settings from ``serve``'s arguments; ``--workers auto`` is resolved here (a
    ConfigError naming the file and key when it cannot be)."""
    ids = tuple(i.strip() for i in args.external_worker_ids.split(",") if i.strip())
    workers = args.workers
    if workers == "auto":
        from harness_pool.sidecar.flink_slots import conf_dir_of, slots_from_flink_conf

        workers = slots_from_flink_conf(conf_dir_of(args.flink_conf_dir))
    return SidecarSettings(
        host=args.host, port=args.port, workers=workers, max_processes=args.max_processes,
        flavor=args.flavor, spawn=args.spawn, assign_timeout=args.assign_timeout,
        start_timeout=args.start_timeout,
        provision_timeout=args.provision_timeout, drain_timeout=args.drain_timeout,
        stop_grace=args.stop_grace, id_prefix=args.id_prefix, external_worker_ids=ids,
        provision_hold_timeout=args.provision_hold_timeout, fn_api_port=args.fn_api_port,
        health_port=args.health_port,
        health_host=args.health_host, metrics_port=args.metrics_port,
        metrics_host=args.metrics_host, admin_address=args.admin_address,
        max_message_mib=args.max_message_mib, max_concurrent_rpcs=args.max_concurrent_rpcs,
        keepalive_time=args.keepalive_time, keepalive_timeout=args.keepalive_timeout,
        first_message_timeout=args.first_message_timeout,
        liveness_timeout=args.liveness_timeout, reap_orphans=args.reap_orphans,
        deps=deps_from_args(args),
        flink_conf_dir=args.flink_conf_dir, runner_check_interval=args.runner_check_interval,
        runner_lost_after=args.runner_lost_after, usage_interval=args.usage_interval,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from harness_pool.sidecar.server import Sidecar  # imports Beam: keep --help fast

    try:
        sidecar = Sidecar(settings_from_args(args))
        sidecar.start()
    except (ConfigError, PermanentError) as exc:
        print(f"harness-pool serve: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        _LOG.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(1.0):
        pass
    sidecar.stop()
    return 0


def fetch_status(address: str, timeout: float = 5.0) -> pool_pb2.PoolStatus:
    with grpc.insecure_channel(address) as channel:
        return pool_pb2_grpc.PoolAdminStub(channel).GetStatus(
            pool_pb2.GetStatusRequest(), timeout=timeout)


def status_dict(status: pool_pb2.PoolStatus) -> dict[str, Any]:
    return json_format.MessageToDict(
        status, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def format_table(status: pool_pb2.PoolStatus) -> str:
    head = ("POOL ID", "KIND", "STATE", "RUNNER WORKER ID", "SLOT", "PID", "UPTIME", "SERVED",
            "CONNECTED", "FORWARDED", "WHY ENDED / ERROR")
    rows = [head] + [
        (w.pool_id, w.kind, w.state, w.runner_worker_id or "-",
         str(w.slot) if w.HasField("slot") else "-", str(w.pid or "-"),
         f"{w.uptime_seconds:.1f}s", str(w.assignments_served), "yes" if w.connected else "no",
         _bytes(w.bytes_forwarded) if w.kind == "external" else "-", _why(w))
        for w in status.workers
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    state = "SERVING" if status.serving else "NOT_SERVING"
    title = f"sidecar {status.address} ({status.flavor}, {state}, keeps {status.target_idle} warm)"
    return "\n".join([title, *lines, *_env_cache_line(status.env_cache)])


def _env_cache_line(cache: pool_pb2.EnvCacheStatus) -> list[str]:
    """One line about job dependencies, once any stage had some (issue 9)."""
    if not (cache.hits or cache.waits or cache.builds or cache.failures or cache.environments):
        return []
    limit = _bytes(cache.limit_bytes) if cache.limit_bytes else "unbounded"
    jobs = f"; job interpreters: {', '.join(cache.interpreters)}" if cache.interpreters else ""
    return [f"env cache {cache.dir}: {cache.environments} environments, "
            f"{_bytes(cache.bytes_in_use)} of {limit}; stages: {cache.hits} hit, "
            f"{cache.waits} waited, {cache.builds} built ({cache.pip_runs} pip runs), "
            f"{cache.failures} refused{jobs}"]


def _why(w: pool_pb2.WorkerStatus, width: int = 100) -> str:
    """An exited worker's end reason, else its last error; cut to ``width``."""
    text = w.end_reason or w.last_error or ""
    return text if len(text) <= width else text[:width - 3] + "..."


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def cmd_status(args: argparse.Namespace) -> int:
    try:
        status = fetch_status(args.address, args.timeout)
    except grpc.RpcError as exc:
        print(f"harness-pool status: sidecar at {args.address} did not answer: "
              f"{exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status_dict(status), indent=2))
    else:
        print(format_table(status))
    return 0


def cmd_recycle(args: argparse.Namespace) -> int:
    try:
        with grpc.insecure_channel(args.address) as channel:
            pool_pb2_grpc.PoolAdminStub(channel).RecycleWorker(
                pool_pb2.RecycleWorkerRequest(pool_id=args.pool_id), timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"harness-pool recycle: {args.address} refused to recycle '{args.pool_id}': "
              f"{exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(f"worker {args.pool_id} is being stopped; a warm replacement takes its place")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from harness_pool.pool import worker

    return worker.main(["--sidecar", args.sidecar, "--pool-id", args.pool_id,
                        "--flavor", args.flavor] + (["--token-stdin"] if args.token_stdin else []))
