"""The runner watch: workers whose runner vanished are ended, whatever they are doing.

A pooled worker outlives its runner: when a TaskManager dies (SIGKILL, OOM
kill, a crash), Kubernetes restarts it beside the *same* sidecar, and the
workers that served the dead one's stages have nobody to talk to. The worker
may notice (its control stream breaks) or not (Beam's harness can block for a
long time); the sidecar does not wait to find out. Once a second
(``runner_check_interval``) it opens a TCP connection to the control endpoint
of every stage a worker holds; when an endpoint has refused connections
continuously for ``runner_lost_after`` seconds, the stage fails with a
sentence naming the endpoint, and the worker is stopped (SIGTERM, SIGKILL
after ``stop_grace``) and replaced like any other.

The bound: a worker of a vanished runner exits within ``runner_lost_after +
runner_check_interval + stop_grace`` seconds (plus one probe's time) of the
runner's port closing, which for a process in the same pod (or host) is the
moment it dies.

What counts as gone: connection refused, host or network unreachable (the
kernel says nobody listens). A timeout or any other error counts as nothing:
a loaded or remote runner is never declared gone for being slow. An endpoint
that is not ``host:port`` (a Unix socket) is not watched.

``RunnerVerdicts`` is the pure part (observations and the time in, decisions
out); ``probe`` and ``RunnerWatch`` (one daemon thread) are the shell.
Threads: the watch thread (a ``Ticker``) is the only one touching its ``RunnerVerdicts``;
it calls ``Pool.holding`` and ``Pool.runner_gone``, which take the pool's
lock; probes run outside any lock.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import socket
import time
from collections.abc import Callable, Iterable

from harness_pool._grpc import _host_port
from harness_pool.pool.core import PoolId
from harness_pool.pool.pool import Held, Pool
from harness_pool.sidecar.ticker import Ticker

#: Errors of a TCP connect that mean nobody listens there any more.
_GONE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})


class Endpoint(enum.Enum):
    ANSWERS = "answers"  # a TCP connection was accepted
    REFUSED = "refused"  # refused or unreachable: nobody listens
    UNKNOWN = "unknown"  # a timeout, another error, or not a host:port endpoint

    def __str__(self) -> str:
        return self.value


def probe(url: str, timeout: float = 0.5) -> Endpoint:
    """One TCP connect to the endpoint ``url`` (closed at once)."""
    target = _host_port(url)
    if target is None:
        return Endpoint.UNKNOWN
    try:
        with socket.create_connection(target, timeout=timeout):
            return Endpoint.ANSWERS
    except OSError as exc:
        return Endpoint.REFUSED if exc.errno in _GONE_ERRNOS else Endpoint.UNKNOWN


def is_gone(url: str) -> bool:
    """The endpoint refuses connections now (one probe): for explaining a failed stage."""
    return probe(url) is Endpoint.REFUSED


@dataclasses.dataclass(frozen=True)
class Lost:
    """A decision: the runner of the stage ``pool_id`` holds is gone."""

    pool_id: PoolId
    endpoint: str
    refused_for: float


class RunnerVerdicts:
    """Since when each held stage's control endpoint has refused connections, and which
    stages have lost their runner. Pure: no sockets, no clock."""

    def __init__(self, lost_after: float) -> None:
        self.lost_after = lost_after
        self._refused_since: dict[tuple[PoolId, str], float] = {}

    def observe(self, pool_id: PoolId, endpoint: str, seen: Endpoint, now: float
                ) -> Lost | None:
        """One probe's result; a ``Lost`` once refusals have lasted ``lost_after``."""
        key = (pool_id, endpoint)
        if seen is not Endpoint.REFUSED:
            self._refused_since.pop(key, None)  # an answer or a doubt starts over
            return None
        since = self._refused_since.setdefault(key, now)
        if now - since >= self.lost_after:
            return Lost(pool_id, endpoint, now - since)
        return None

    def keep_only(self, held: Iterable[tuple[PoolId, str]]) -> None:
        """Forgets stages no longer held (ended, or decided)."""
        keep = set(held)
        for key in [k for k in self._refused_since if k not in keep]:
            del self._refused_since[key]


class RunnerWatch:
    """The thread that probes held stages' control endpoints and ends the lost ones."""

    def __init__(self, pool: Pool, interval: float, lost_after: float,
                 probe: Callable[[str], Endpoint] = probe,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.verdicts = RunnerVerdicts(lost_after)
        self._probe = probe
        self._clock = clock
        self._ticker = Ticker("hp-runner-watch", interval, self.check)

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()

    def check(self) -> list[Lost]:
        """One pass: probes every held stage's endpoint once (each distinct endpoint once);
        ends the stages whose runner is lost; returns them."""
        held: list[Held] = self.pool.holding()
        seen: dict[str, Endpoint] = {}
        lost = []
        for h in held:
            if h.control_endpoint not in seen:
                seen[h.control_endpoint] = self._probe(h.control_endpoint)
            decision = self.verdicts.observe(h.pool_id, h.control_endpoint,
                                             seen[h.control_endpoint], self._clock())
            if decision is not None:
                lost.append(decision)
        for decision in lost:
            self.pool.runner_gone(decision.pool_id, decision.endpoint, decision.refused_for)
        self.verdicts.keep_only((h.pool_id, h.control_endpoint) for h in held
                                if h.pool_id not in {d.pool_id for d in lost})
        return lost
