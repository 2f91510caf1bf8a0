"""Settings of job-dependency preparation, for the sidecar's flags (phase 2 wires them).

Each default says why it is what it is. ``validate()`` reports every problem
at once, each naming the flag, the value and what was expected;
``parse_size`` reads Kubernetes-style quantities (``512Mi``, ``2Gi``, ``1G``).
"""

from __future__ import annotations

import dataclasses
import os
import re

from harness_pool._errors import ConfigError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|[kmgt]i?)?[Bb]?\s*$")
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int:
    """``"2Gi"`` → 2147483648; a ``ValueError`` naming the text otherwise."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 512Mi, 2Gi, 1G, 1048576)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").lower()])


#: Environment variable naming the default ``--env-cache-dir`` (the flag wins).
CACHE_DIR_ENV = "HARNESS_POOL_ENV_CACHE_DIR"
DEFAULT_CACHE_DIR = "/var/cache/harness-pool"


def default_cache_dir() -> str:
    """``$HARNESS_POOL_ENV_CACHE_DIR`` when set, else ``/var/cache/harness-pool``."""
    return os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR


@dataclasses.dataclass
class DepsSettings:
    cache_dir: str = dataclasses.field(default_factory=default_cache_dir)
    """Root of the environment cache (``--env-cache-dir``, default
    ``$HARNESS_POOL_ENV_CACHE_DIR`` or ``/var/cache/harness-pool``): mount an ``emptyDir``
    there so environments outlive worker processes but not the pod; shared by every
    worker of the pod, never by two pods."""

    cache_size: int = 2 * 2**30
    """``--env-cache-size``: environments and retrieved artifacts are evicted, least
    recently used and not in use first, above this many bytes. Keep it below the
    volume's ``sizeLimit`` by at least the largest job environment (a build happens
    before eviction). 2 GiB fits a few jobs with numpy/pandas-sized dependencies."""

    pip_timeout: float = 600.0
    """Bound on one pip run; the StartWorker deadline bounds it further. Building sdists
    of large packages on a busy node can take minutes; a hung pip must not hold a slot
    forever."""

    prepare_timeout: float = 900.0
    """Bound on a whole ``prepare`` (artifact downloads, waiting for another worker's
    build, pip). Beam's runners wait for the worker's control channel; Flink's default
    for that is long, so the first stage of a job may take this long before failing."""

    call_timeout: float = 120.0
    """Bound on one artifact RPC (Beam's Go boot dials for 2 minutes)."""

    interpreter_idle: float = 300.0
    """``--interpreter-idle-timeout``: a job interpreter's fork server (PyFlink
    ``python.executable`` inside ``python.archives``) is stopped after this many seconds
    without a worker; it is started again (seconds of imports) at the job's next stage.
    Five minutes spans the pauses between a streaming job's restarts."""

    job_interpreters: str = "archives"
    """``--job-interpreters``: which interpreters a stage may ask for (PyFlink's
    ``python.executable``, ``HARNESS_POOL_PYTHON``). "archives": only one inside the
    job's own directory (``python.archives``); an absolute path elsewhere names a file
    of the TaskManager's container, which the sidecar's container does not share, so
    the pool's interpreter serves it. "any": every other interpreter (TaskManager and
    sidecar share one file system). "off": always the pool's."""

    def validate(self) -> DepsSettings:
        problems = []
        if not self.cache_dir.startswith("/"):
            problems.append(f"--env-cache-dir: {self.cache_dir!r} must be an absolute path")
        if self.cache_size < 0:
            problems.append(f"--env-cache-size: {self.cache_size} must be 0 (unbounded) or "
                            "a positive number of bytes")
        for flag, value in (("--pip-timeout", self.pip_timeout),
                            ("--prepare-timeout", self.prepare_timeout),
                            ("--artifact-call-timeout", self.call_timeout),
                            ("--interpreter-idle-timeout", self.interpreter_idle)):
            if value <= 0:
                problems.append(f"{flag}: {value} must be a positive number of seconds")
        if self.job_interpreters not in ("archives", "any", "off"):
            problems.append(f"--job-interpreters: {self.job_interpreters!r}; expected "
                            "archives, any or off")
        if self.pip_timeout > self.prepare_timeout > 0:
            problems.append(f"--pip-timeout: {self.pip_timeout} is above --prepare-timeout "
                            f"{self.prepare_timeout}; a pip run could never use it all")
        if problems:
            raise ConfigError(problems)
        return self

    @property
    def max_bytes(self) -> int | None:
        return self.cache_size or None
