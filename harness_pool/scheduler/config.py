"""The cycle file: typed, validated at load, every problem reported at once.

A cycle file declares the backend, where the scheduler keeps its state, the
jobs, the steps of one cycle and the schedule. ``load_cycle(path)`` returns a
``CycleConfig`` or raises ``ConfigError`` whose ``problems`` name each field,
the value found and what was expected, e.g.
``steps[2].job: unknown job 'backfil'; known: bounded, streaming``.

Invariants of a loaded config: every step names a known job where it needs
one, durations are non-negative seconds, the cron expression parses and the
time zone exists, and each job has exactly one artifact (``python`` or ``jar``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness_pool._errors import ConfigError
from harness_pool.scheduler._reader import Reader as _Reader
from harness_pool.scheduler._reader import parse_duration

__all__ = ["Action", "BackendConfig", "Capabilities", "CycleConfig", "JobSpec", "Polling",
           "SavepointPolicy", "Schedule", "StateConfig", "Step", "capabilities", "load_cycle",
           "parse_cycle", "parse_duration"]


class Action(str, enum.Enum):
    """What one step of a cycle does."""

    SUSPEND = "suspend"  # stop the job with a savepoint; the cycle remembers the savepoint
    START = "start"  # submit the job fresh, or from `savepoint` (a path or "latest")
    RESUME = "resume"  # submit the job from the savepoint this cycle took of it
    WAIT = "wait"  # wait until the job reports `state` (default FINISHED), with timeout
    CANCEL = "cancel"  # cancel the job without a savepoint
    SAVEPOINT = "savepoint"  # trigger a savepoint, the job keeps running
    RESCALE = "rescale"  # savepoint-stop, then resume with `parallelism` (int or free-slots)
    SLEEP = "sleep"  # do nothing for `duration`


JOB_ACTIONS = {a for a in Action if a is not Action.SLEEP}
BACKENDS = ("flink-rest", "flink-operator", "ververica")
STATE_KINDS = ("file", "configmap")
SNAPSHOT_MODES = ("resource", "legacy")
WAIT_STATES = ("RUNNING", "FINISHED", "CANCELED", "FAILED")


@dataclass(frozen=True)
class BackendConfig:
    type: str
    url: str = ""
    """Flink REST or Ververica Platform base URL (unused by flink-operator)."""
    namespace: str = "default"
    """Kubernetes namespace (flink-operator) or Ververica namespace."""
    python_jar: str = ""
    """Jar that carries Flink's PythonDriver; default: flink-python from apache-flink."""
    request_timeout: float = 10.0
    """Bound of every single HTTP / Kubernetes request (a slow answer is a temporary error)."""
    submit_grace: float = 60.0
    """How long a submission that may be in flight (the scheduler restarted, or the
    connection broke mid-request) gets to show up before it is sent again. PyFlink's
    PythonDriver takes seconds before Flink lists the job; 60 s covers a busy JobManager."""
    snapshots: str = "resource"
    """flink-operator: ``resource`` (FlinkStateSnapshot resources, operator 1.10+ default)
    or ``legacy`` (``kubernetes.operator.snapshot.resource.enabled: false``, or 1.9)."""
    token_file: str = ""
    """Ververica Platform: file holding an API token (a mounted Secret)."""
    token_env: str = ""
    """Ververica Platform: environment variable holding an API token (secretKeyRef)."""


@dataclass(frozen=True)
class StateConfig:
    type: str = "file"
    path: str = ""
    """File backend: the JSON state file (written atomically)."""
    configmap: str = ""
    """ConfigMap backend: the ConfigMap name (in backend.namespace)."""
    lease: str = ""
    """If set, only the holder of this coordination.k8s.io Lease acts."""
    lease_duration: float = 15.0
    """client-go's LeaseDuration: a candidate takes over a Lease whose record it has not
    seen change for this long (its own clock; other hosts' clocks are never compared)."""
    renew_deadline: float = 10.0
    """client-go's RenewDeadline: the holder stops acting when it has not renewed for this
    long. Shorter than lease_duration, so it stops before anyone else may start."""
    retry_period: float = 2.0
    """client-go's RetryPeriod: one acquire/renew attempt (at most one write) per period."""


@dataclass(frozen=True)
class SavepointPolicy:
    dir: str = ""
    """Target directory for savepoints (empty: the cluster's state.savepoints.dir)."""
    keep: int | None = 5
    """Savepoints kept per job; older ones are disposed of through the backend
    (None: the backend keeps its own history, e.g. the operator in legacy mode)."""
    retries: int = 2
    """Extra attempts after a failed savepoint before the cycle gives up."""
    retry_backoff: float = 2.0
    timeout: float = 600.0


@dataclass(frozen=True)
class Polling:
    interval: float = 0.1
    """First poll delay: fast, so streaming downtime stays close to Flink's own."""
    max_interval: float = 0.25
    """Backoff cap for polls; keeps the extra downtime per cycle well under 2 s."""
    error_backoff: float = 10.0
    """Backoff cap between retries of a request that failed temporarily (unreachable,
    5xx, a garbled answer): retried until the step's deadline, never faster than this."""


@dataclass(frozen=True)
class Schedule:
    every: float | None = None
    cron: str | None = None
    timezone: str = "UTC"


@dataclass(frozen=True)
class JobSpec:
    name: str
    """The job's name in this file (used in steps)."""
    flink_name: str
    """The job name Flink reports (to find a running copy); default: the key."""
    python: str = ""
    jar: str = ""
    entry_class: str = ""
    args: tuple[str, ...] = ()
    parallelism: int | None = None
    allow_non_restored_state: bool = False
    resource: str = ""
    """FlinkDeployment/FlinkSessionJob or Ververica deployment name (other backends)."""
    kind: str = "FlinkDeployment"


@dataclass(frozen=True)
class Step:
    action: Action
    job: str = ""
    timeout: float = 300.0
    state: str = "FINISHED"
    savepoint: str = ""
    parallelism: int | str | None = None
    duration: float = 0.0


@dataclass(frozen=True)
class CycleConfig:
    name: str
    backend: BackendConfig
    state: StateConfig
    jobs: dict[str, JobSpec]
    steps: tuple[Step, ...]
    schedule: Schedule = field(default_factory=Schedule)
    savepoints: SavepointPolicy = field(default_factory=SavepointPolicy)
    polling: Polling = field(default_factory=Polling)
    source: str = ""


def _read_jobs(r: _Reader, raw: Any) -> dict[str, JobSpec]:
    jobs: dict[str, JobSpec] = {}
    data = r.mapping(raw, "jobs")
    if not data:
        r.problems.append("jobs: missing or empty; expected a mapping of job name to job")
    known = {"flink_name", "python", "jar", "entry_class", "args", "parallelism",
             "allow_non_restored_state", "resource", "kind"}
    for name, spec in data.items():
        where = f"jobs.{name}"
        spec = r.mapping(spec, where)
        r.unknown(spec, where, known)
        args = spec.get("args", [])
        if not isinstance(args, list):
            r.problem(f"{where}.args", args, "a list of strings")
            args = []
        anrs = spec.get("allow_non_restored_state", False)
        if not isinstance(anrs, bool):
            r.problem(f"{where}.allow_non_restored_state", anrs, "true or false")
            anrs = False
        job = JobSpec(
            name=str(name),
            flink_name=r.string(spec, "flink_name", where, str(name)),
            python=r.string(spec, "python", where),
            jar=r.string(spec, "jar", where),
            entry_class=r.string(spec, "entry_class", where),
            args=tuple(str(a) for a in args),
            parallelism=r.integer(spec, "parallelism", where, None, minimum=1),
            allow_non_restored_state=anrs,
            resource=r.string(spec, "resource", where),
            kind=r.string(spec, "kind", where, "FlinkDeployment",
                          choices=("FlinkDeployment", "FlinkSessionJob")),
        )
        jobs[job.name] = job
    return jobs


def _read_step(r: _Reader, raw: Any, index: int, jobs: dict[str, JobSpec]) -> Step | None:
    where = f"steps[{index}]"
    data = r.mapping(raw, where)
    r.unknown(data, where, {"action", "job", "timeout", "state", "savepoint", "parallelism",
                            "duration"})
    action_name = r.string(data, "action", where, required=True,
                           choices=tuple(a.value for a in Action))
    if not action_name:
        return None
    action = Action(action_name)
    job = r.string(data, "job", where)
    if action in JOB_ACTIONS:
        if not job:
            r.problems.append(f"{where}.job: missing; {action.value} needs a job; "
                              f"known: {', '.join(sorted(jobs))}")
        elif job not in jobs:
            r.problems.append(f"{where}.job: unknown job {job!r}; "
                              f"known: {', '.join(sorted(jobs))}")
    parallelism: int | str | None = data.get("parallelism")
    if parallelism is not None and parallelism != "free-slots" and (
        isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1
    ):
        r.problem(f"{where}.parallelism", parallelism, "an integer >= 1 or 'free-slots'")
        parallelism = None
    if action is Action.RESCALE and parallelism is None and "parallelism" not in data:
        r.problems.append(f"{where}.parallelism: missing; rescale needs a number or free-slots")
    step = Step(
        action=action,
        job=job,
        timeout=r.duration(data, "timeout", where, 300.0),
        state=r.string(data, "state", where, "FINISHED", choices=WAIT_STATES),
        savepoint=r.string(data, "savepoint", where),
        parallelism=parallelism,
        duration=r.duration(data, "duration", where, 0.0),
    )
    return step


def _read_schedule(r: _Reader, raw: Any) -> Schedule:
    data = r.mapping(raw, "schedule")
    r.unknown(data, "schedule", {"every", "cron", "timezone"})
    every = r.duration(data, "every", "schedule", 0.0) if "every" in data else None
    if every is not None and every <= 0 and "every" in data:
        if not any(p.startswith("schedule.every") for p in r.problems):
            r.problem("schedule.every", data["every"], "a positive duration")
        every = None
    cron = r.string(data, "cron", "schedule") or None
    tz = r.string(data, "timezone", "schedule", "UTC")
    if every is not None and cron:
        r.problems.append("schedule: both every and cron given; expected one of them")
    if cron:
        from croniter import croniter

        if not croniter.is_valid(cron):
            r.problem("schedule.cron", cron, "a cron expression like '0 */6 * * *'")
            cron = None
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(tz)
    except Exception:
        r.problem("schedule.timezone", tz, "an IANA time zone like UTC or Europe/Berlin")
        tz = "UTC"
    return Schedule(every=every, cron=cron, timezone=tz)


def _read_backend(r: _Reader, raw: Any) -> BackendConfig:
    b = r.mapping(raw, "backend")
    r.unknown(b, "backend", {"type", "url", "namespace", "python_jar", "request_timeout",
                             "submit_grace", "snapshots", "token_file", "token_env"})
    backend = BackendConfig(
        type=r.string(b, "type", "backend", "flink-rest", choices=BACKENDS),
        url=r.string(b, "url", "backend"),
        namespace=r.string(b, "namespace", "backend", "default"),
        python_jar=r.string(b, "python_jar", "backend"),
        request_timeout=r.duration(b, "request_timeout", "backend", 10.0),
        submit_grace=r.duration(b, "submit_grace", "backend", 60.0),
        snapshots=r.string(b, "snapshots", "backend", "resource", choices=SNAPSHOT_MODES),
        token_file=r.string(b, "token_file", "backend"),
        token_env=r.string(b, "token_env", "backend"),
    )
    if backend.type in ("flink-rest", "ververica") and not backend.url:
        r.problems.append(f"backend.url: missing; {backend.type} needs the REST base URL")
    if backend.request_timeout <= 0:
        r.problem("backend.request_timeout", b.get("request_timeout"), "a positive duration")
    if backend.type != "ververica":
        for key in ("token_file", "token_env"):
            if key in b:
                r.problem(f"backend.{key}", b[key], f"nothing: {backend.type} takes no "
                          "Ververica API token")
    if backend.token_file and backend.token_env:
        r.problems.append("backend.token_env: both token_file and token_env given; "
                          "expected one of them")
    if "snapshots" in b and backend.type != "flink-operator":
        r.problem("backend.snapshots", b["snapshots"], "nothing: only flink-operator has "
                  "snapshot modes")
    return backend


def _read_state(r: _Reader, raw: Any) -> StateConfig:
    s = r.mapping(raw, "state")
    r.unknown(s, "state", {"type", "path", "configmap", "lease", "lease_duration",
                           "renew_deadline", "retry_period"})
    state = StateConfig(
        type=r.string(s, "type", "state", "file", choices=STATE_KINDS),
        path=r.string(s, "path", "state"),
        configmap=r.string(s, "configmap", "state"),
        lease=r.string(s, "lease", "state"),
        lease_duration=r.duration(s, "lease_duration", "state", 15.0),
        renew_deadline=r.duration(s, "renew_deadline", "state", 10.0),
        retry_period=r.duration(s, "retry_period", "state", 2.0),
    )
    if state.type == "file" and not state.path:
        r.problems.append("state.path: missing; the file state store needs a path")
    if state.type == "configmap" and not state.configmap:
        r.problems.append("state.configmap: missing; the configmap state store needs a name")
    if state.type == "configmap" and not state.lease:
        r.problems.append("state.lease: missing; with the configmap state store a Lease "
                          "decides which replica acts (give it a name)")
    if not 0 < state.retry_period < state.renew_deadline < state.lease_duration:
        r.problems.append(
            f"state.renew_deadline: got retry_period {state.retry_period:g} s, renew_deadline "
            f"{state.renew_deadline:g} s, lease_duration {state.lease_duration:g} s; expected "
            "0 < retry_period < renew_deadline < lease_duration (client-go's rule)")
    return state


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; a cycle file asking for more is refused at load."""

    free_slots: bool
    """Knows the cluster's free slots (``parallelism: free-slots``)."""
    retention: bool
    """Can dispose of savepoints (``savepoints.keep``)."""
    savepoint_dir: bool
    """Takes savepoints into ``savepoints.dir`` (else the platform's configured place)."""


def capabilities(backend: BackendConfig) -> Capabilities:
    if backend.type == "flink-rest":
        return Capabilities(free_slots=True, retention=True, savepoint_dir=True)
    if backend.type == "flink-operator":
        resource = backend.snapshots == "resource"
        return Capabilities(free_slots=False, retention=resource, savepoint_dir=True)
    return Capabilities(free_slots=False, retention=True, savepoint_dir=False)


def _check_capabilities(r: _Reader, backend: BackendConfig, steps: list[Step],
                        sp: dict[str, Any]) -> None:
    can = capabilities(backend)
    what = backend.type + (f" (snapshots: {backend.snapshots})"
                           if backend.type == "flink-operator" else "")
    for i, step in enumerate(steps):
        if step.parallelism == "free-slots" and not can.free_slots:
            r.problem(f"steps[{i}].parallelism", "free-slots",
                      f"a number: {what} does not know the cluster's free slots")
    if "keep" in sp and not can.retention:
        r.problem("savepoints.keep", sp["keep"], f"nothing: {what} cannot dispose of "
                  "savepoints; the operator keeps its own history "
                  "(kubernetes.operator.savepoint.history.max.count)")
    if sp.get("dir") and not can.savepoint_dir:
        r.problem("savepoints.dir", sp["dir"], f"nothing: {what} takes savepoints into the "
                  "deployment's configured directory (Universal Blob Storage or "
                  "state.savepoints.dir); set it there")


def parse_cycle(data: Any, source: str = "<memory>") -> CycleConfig:
    """Validate an already-parsed YAML document; raise ``ConfigError`` listing every problem."""
    r = _Reader()
    top = r.mapping(data, "(top level)")
    r.unknown(top, "", {"name", "backend", "state", "jobs", "steps", "schedule", "savepoints",
                        "polling"})
    name = r.string(top, "name", "(top level)", "cycle")
    backend = _read_backend(r, top.get("backend"))
    state = _read_state(r, top.get("state"))
    jobs = _read_jobs(r, top.get("jobs"))
    for job in jobs.values():
        if backend.type == "flink-rest" and bool(job.python) == bool(job.jar):
            r.problems.append(f"jobs.{job.name}: expected exactly one of python or jar")
        if job.jar and not job.entry_class:
            r.problems.append(f"jobs.{job.name}.entry_class: missing; a jar job needs one")
        if backend.type != "flink-rest" and not job.resource:
            r.problems.append(f"jobs.{job.name}.resource: missing; {backend.type} needs "
                              "the deployment name")
    raw_steps = top.get("steps")
    steps: list[Step] = []
    if not isinstance(raw_steps, list) or not raw_steps:
        r.problem("steps", raw_steps, "a non-empty list of steps")
    else:
        for i, raw in enumerate(raw_steps):
            step = _read_step(r, raw, i, jobs)
            if step:
                steps.append(step)
    suspended: set[str] = set()
    for i, step in enumerate(steps):
        if step.action in (Action.SUSPEND, Action.RESCALE):
            suspended.add(step.job)
        if step.action is Action.RESUME and step.job not in suspended:
            r.problems.append(f"steps[{i}].job: resume {step.job!r} before any suspend of it; "
                              "expected a suspend step of the same job earlier in the cycle")
    sp = r.mapping(top.get("savepoints"), "savepoints")
    r.unknown(sp, "savepoints", {"dir", "keep", "retries", "retry_backoff", "timeout"})
    _check_capabilities(r, backend, steps, sp)
    savepoints = SavepointPolicy(
        dir=r.string(sp, "dir", "savepoints"),
        keep=(r.integer(sp, "keep", "savepoints", 5, minimum=1) or 5)
        if capabilities(backend).retention else None,
        retries=r.integer(sp, "retries", "savepoints", 2) or 0,
        retry_backoff=r.duration(sp, "retry_backoff", "savepoints", 2.0),
        timeout=r.duration(sp, "timeout", "savepoints", 600.0),
    )
    po = r.mapping(top.get("polling"), "polling")
    r.unknown(po, "polling", {"interval", "max_interval", "error_backoff"})
    polling = Polling(
        interval=r.duration(po, "interval", "polling", 0.1),
        max_interval=r.duration(po, "max_interval", "polling", 0.25),
        error_backoff=r.duration(po, "error_backoff", "polling", 10.0),
    )
    schedule = _read_schedule(r, top.get("schedule"))
    if r.problems:
        raise ConfigError([f"{source}: {p}" for p in r.problems])
    return CycleConfig(name=name, backend=backend, state=state, jobs=jobs, steps=tuple(steps),
                       schedule=schedule, savepoints=savepoints, polling=polling, source=source)


def load_cycle(path: str | Path) -> CycleConfig:
    """Read and validate a cycle file; relative job paths are taken from the file's folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the cycle file: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{at}: "
                          f"{getattr(exc, 'problem', None) or exc}") from exc
    cfg = parse_cycle(data, str(path))
    base = path.resolve().parent
    jobs = {
        name: JobSpec(**{**job.__dict__,
                         "python": _abs(base, job.python), "jar": _abs(base, job.jar)})
        for name, job in cfg.jobs.items()
    }
    state = cfg.state
    if state.type == "file":
        state = StateConfig(**{**state.__dict__, "path": _abs(base, state.path)})
    return CycleConfig(**{**cfg.__dict__, "jobs": jobs, "state": state})


def _abs(base: Path, value: str) -> str:
    if not value or "://" in value or Path(value).is_absolute():
        return value
    return str(base / value)
