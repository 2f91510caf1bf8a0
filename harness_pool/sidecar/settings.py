"""The sidecar's settings: one typed, validated object built from the command line.

Each default says why it is what it is. ``validate()`` reports every problem at
once, each naming the flag, the value and what was expected.
"""

from __future__ import annotations

import dataclasses
import re

from harness_pool._errors import ConfigError
from harness_pool.deps.settings import DepsSettings

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclasses.dataclass
class SidecarSettings:
    host: str = "127.0.0.1"
    """Loopback by default: the runner is in the same pod. Set 0.0.0.0 only on purpose."""

    port: int = 50000
    """The fixed address the TaskManager's PYTHON_LOOPBACK_SERVER_ADDRESS and Beam's
    --environment_config point at."""

    workers: int = 4
    """Warm pooled workers kept idle; match the TaskManager's slot count so a burst of one
    StartWorker per slot finds a warm worker each (``--workers auto`` reads it from the
    TaskManager's Flink configuration, see flink_conf_dir)."""

    max_processes: int = 0
    """Cap on pooled processes alive at once (busy + warm); 0 means 2 × workers, so
    replacements can warm while every slot is busy."""

    flavor: str = "beam"
    """"beam": stock Python SDK harness; "pyflink": also PyFlink's operations and coders."""

    spawn: str = "fork"
    """"fork": a fork server imports Beam once and forks each worker (milliseconds of CPU
    per replacement, shared pages); "exec": a fresh interpreter per worker (about a
    second of CPU each, fully independent)."""

    assign_timeout: float = 30.0
    """How long StartWorker waits for an idle worker before answering with an error. A
    runner must never wait forever; 30 s covers a replacement warming (about 1-2 s)."""

    start_timeout: float = 60.0
    """How long an assigned worker may take to connect its control channel to the runner
    (Beam's own harness gives its control channel 60 s)."""

    provision_timeout: float = 10.0
    """Deadline for GetProvisionInfo on the runner's provision endpoint."""

    drain_timeout: float = 20.0
    """On SIGTERM, how long running stages may continue before their workers are stopped;
    keep it below the pod's terminationGracePeriodSeconds minus stop_grace."""

    stop_grace: float = 5.0
    """SIGTERM → SIGKILL grace for a worker process."""

    id_prefix: str = "worker"
    """Pool worker ids are PREFIX-1, PREFIX-2, ... and never reused."""

    external_worker_ids: tuple[str, ...] = ()
    """Fixed-endpoint mode: ids of unmodified SDK harness containers that may connect."""

    fn_api_port: int = 0
    """Fixed-endpoint mode: a separate port for the SDK-facing Fn API (provision,
    artifacts, logging, control, data, state); endpoints handed to harnesses name it.
    0: the main port serves them too."""

    provision_hold_timeout: float = 60.0
    """Fixed-endpoint mode: how long GetProvisionInfo from an unassigned external worker
    is held before it answers UNAVAILABLE (the boot retries; no crash loop)."""

    health_port: int = 0
    """A second port serving only gRPC health, for Kubernetes probes (the kubelet dials the
    pod IP): the main port can then stay on loopback. 0: health only on the main port."""

    health_host: str = "0.0.0.0"
    """Address the health-only port binds (with health_port)."""

    metrics_port: int = 0
    """Port of the Prometheus /metrics endpoint; 0 disables it."""

    metrics_host: str = ""
    """Address /metrics binds; empty means the same as host."""

    admin_address: str = ""
    """Where RecycleWorker (which stops workers) is served: ``unix:/path`` (best: a
    directory only the sidecar's container mounts, so no job's harness in the pod can
    reach it) or HOST:PORT (reachable by every container of the pod). Empty: nowhere;
    GetStatus stays on the main port either way."""

    max_message_mib: int = 64
    """Largest gRPC message accepted or sent, in MiB. Fixed-endpoint mode forwards whole
    data-plane messages and gRPC may hold a few per stream in memory: 64 MiB fits a
    sidecar container of a few hundred MiB; Beam's Python SDK flushes data at 10 MB."""

    max_concurrent_rpcs: int = 0
    """Calls served at once on the main port (each has its own thread); more get
    RESOURCE_EXHAUSTED at once. 0: 64, plus 16 per external worker id."""

    keepalive_time: float = 30.0
    """Seconds of silence after which the sidecar pings a client connection."""

    keepalive_timeout: float = 10.0
    """Seconds a pinged client has to answer before its connection (and every stream on
    it: a held provision call, an Attach, a Watch) is closed: a frozen or vanished peer
    holds nothing for longer than keepalive_time + keepalive_timeout."""

    first_message_timeout: float = 30.0
    """Seconds a stream that must speak first (a pooled worker's Attach, a data or state
    stream that names its stage only in its first message) may stay silent before it is
    cancelled."""

    liveness_timeout: float = 60.0
    """Liveness fails when the supervisor loop has not completed a pass for this long (a
    wedged pool). Longer than a fork server takes to import Beam on a busy node."""

    reap_orphans: str = "auto"
    """Orphans of user code (a DoFn that starts a process and never waits) end up the
    children of PID 1. "auto": reap them when the sidecar is PID 1 (a container without
    an init) or already a child subreaper; "on": become a child subreaper and reap; "off":
    never (a process embedding the sidecar reaps its own children)."""

    deps: DepsSettings = dataclasses.field(default_factory=DepsSettings)
    """Job dependencies (issue 9): the environment cache and its timeouts
    (--env-cache-dir, --env-cache-size, --pip-timeout, --prepare-timeout,
    --artifact-call-timeout, --interpreter-idle-timeout); see deps/settings.py."""

    # -- runner watch and usage metrics (issue 13) ------------------------------

    runner_check_interval: float = 1.0
    """How often the sidecar opens a TCP connection to the control endpoint of every stage
    a worker holds, to learn that its runner is gone. A connect to a live local port costs
    microseconds; once a second keeps the bound below short."""

    runner_lost_after: float = 3.0
    """A stage whose control endpoint has refused connections (or been unreachable) this
    long lost its runner (a TaskManager gone): it fails with a sentence saying so and its
    worker is stopped and replaced. Bound: such a worker exits within
    runner_lost_after + runner_check_interval + stop_grace seconds of the TaskManager
    vanishing (9 s with the defaults). Long enough that a stage ending normally (its
    runner closes the endpoint, the worker exits in milliseconds) is never mistaken for
    it; a slow or remote runner that does not answer is never declared gone."""

    usage_interval: float = 1.0
    """Seconds between two readings of the seated workers' /proc/<pid>/stat for the
    per-slot CPU and RSS metrics (each reading costs microseconds per worker)."""

    flink_conf_dir: str = ""
    """Where --workers auto reads taskmanager.numberOfTaskSlots: Flink's configuration
    folder (config.yaml, or the legacy flink-conf.yaml). Empty: $FLINK_CONF_DIR."""

    def validate(self) -> SidecarSettings:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"--port: {self.port} is not a port number (0-65535)")
        if self.workers < 0:
            problems.append(f"--workers: {self.workers}; expected 0 or more")
        if self.max_processes < 0:
            problems.append(f"--max-processes: {self.max_processes}; expected 0 (auto) or more")
        elif self.max_processes and self.max_processes < self.workers:
            problems.append(
                f"--max-processes: {self.max_processes} is below --workers {self.workers}")
        if self.flavor not in ("beam", "pyflink"):
            problems.append(f"--flavor: '{self.flavor}'; expected beam or pyflink")
        if self.spawn not in ("fork", "exec"):
            problems.append(f"--spawn: '{self.spawn}'; expected fork or exec")
        for name in ("assign_timeout", "start_timeout", "provision_timeout", "drain_timeout",
                     "stop_grace", "provision_hold_timeout"):
            value = getattr(self, name)
            if not value >= 0:
                problems.append(f"--{name.replace('_', '-')}: {value}; expected seconds >= 0")
        for name in ("keepalive_time", "keepalive_timeout", "first_message_timeout",
                     "liveness_timeout"):
            value = getattr(self, name)
            if not value > 0:
                problems.append(f"--{name.replace('_', '-')}: {value}; expected seconds > 0")
        if not 1 <= self.max_message_mib <= 2047:
            problems.append(f"--max-message-mib: {self.max_message_mib}; expected 1-2047")
        if self.max_concurrent_rpcs < 0:
            problems.append(f"--max-concurrent-rpcs: {self.max_concurrent_rpcs}; expected 0 "
                            "(auto) or more")
        if self.reap_orphans not in ("auto", "on", "off"):
            problems.append(f"--reap-orphans: '{self.reap_orphans}'; expected auto, on or off")
        if self.admin_address and not (self.admin_address.startswith("unix:")
                                       or self.admin_address.rpartition(":")[2].isdigit()):
            problems.append(f"--admin-address: '{self.admin_address}'; expected unix:/path "
                            "or HOST:PORT")
        if not _ID_RE.match(self.id_prefix):
            problems.append(f"--id-prefix: '{self.id_prefix}'; expected letters, digits, . _ -")
        seen: set[str] = set()
        for wid in self.external_worker_ids:
            if not _ID_RE.match(wid):
                problems.append(f"--external-worker-ids: '{wid}' is not a valid worker id")
            elif wid in seen:
                problems.append(f"--external-worker-ids: '{wid}' is listed twice")
            elif wid.startswith(self.id_prefix + "-"):
                problems.append(f"--external-worker-ids: '{wid}' collides with the pooled "
                                f"ids {self.id_prefix}-N; choose another name or --id-prefix")
            seen.add(wid)
        if self.workers == 0 and not self.external_worker_ids:
            problems.append("--workers 0 needs --external-worker-ids, or nothing can serve")
        if not 0 <= self.fn_api_port <= 65535:
            problems.append(f"--fn-api-port: {self.fn_api_port} is not a port number")
        elif self.fn_api_port and not self.external_worker_ids:
            problems.append("--fn-api-port: only meaningful with --external-worker-ids")
        elif self.fn_api_port and self.fn_api_port in (self.port, self.health_port):
            problems.append(f"--fn-api-port: {self.fn_api_port} is already used by another "
                            "listener")
        if not 0 <= self.health_port <= 65535:
            problems.append(f"--health-port: {self.health_port} is not a port number")
        elif self.health_port and self.health_port == self.port:
            problems.append(f"--health-port: {self.health_port} is the same as --port")
        if not 0 <= self.metrics_port <= 65535:
            problems.append(f"--metrics-port: {self.metrics_port} is not a port number")
        try:
            self.deps.validate()
        except ConfigError as exc:
            problems.extend(exc.problems)
        for name in ("runner_check_interval", "runner_lost_after", "usage_interval"):
            value = getattr(self, name)
            if not value > 0:
                problems.append(f"--{name.replace('_', '-')}: {value}; expected seconds > 0")
        if problems:
            raise ConfigError(problems)
        return self

    @property
    def process_cap(self) -> int:
        return self.max_processes or 2 * self.workers

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mib * 1024 * 1024

    @property
    def rpc_cap(self) -> int:
        return self.max_concurrent_rpcs or 64 + 16 * len(self.external_worker_ids)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
