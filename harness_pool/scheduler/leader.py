"""One actor: a ``coordination.k8s.io/v1`` Lease with client-go's semantics, or a file lock.

Lease (``LeaseElector``), as client-go's ``leaderelection`` package does it:

- A candidate keeps the Lease record it last observed and *the time on its own
  monotonic clock when it saw that record change*. It may take the Lease over
  only when ``lease_duration`` has passed on its own clock since then. Other
  hosts' clocks are never compared: ``renewTime`` is only ever checked for
  change, so any wall-clock skew between replicas is harmless.
- The holder renews every ``retry_period`` (at most one write per period) and
  counts as leader only until ``renew_deadline`` after the *start* of its last
  successful renewal. As ``renew_deadline < lease_duration``, the holder stops
  acting before any candidate may start.
- A deleted Lease is created again (RBAC ``create``); writes carry the
  resourceVersion read, so two candidates racing for it cannot both win (the
  loser gets 409 and stays a follower). ``release`` (clean shutdown) clears the
  holder so a successor need not wait ``lease_duration``.

``decide_lease`` is the pure rule; ``LeaseElector.tick`` does one attempt (the
I/O); ``start`` runs ticks on a daemon thread ("lease-keeper") so the Lease is
renewed on its own schedule, never lapsing during the run loop's sleeps or long
calls. ``leading()`` is a lock-free read of the last outcome against the clock.

File lock (``FileLock``): for the file state store, an exclusive ``flock`` on
``<state>.lock`` held for the life of the actor; the kernel drops it when the
process dies (even by SIGKILL), so a restarted scheduler takes it at once.

Threads: the keeper thread owns the elector's record fields; ``leading()`` may
be called from any thread (it reads two floats under ``_lock``).
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from harness_pool._errors import HarnessPoolError, PermanentError
from harness_pool.scheduler.backends._boundary import AlreadyExists, Conflict, NotFound, kube_call

log = logging.getLogger(__name__)


class Actor(Protocol):
    """Whoever may act on the state and the jobs."""

    def leading(self) -> bool: ...

    def try_acquire(self) -> bool:
        """One attempt to become (or stay) the actor; True if it is."""
        ...

    def release(self) -> None: ...

    def holder(self) -> str:
        """Who holds it, for messages."""
        ...

    def start(self) -> None:
        """Keep it on its own schedule (a thread), if it needs keeping."""
        ...

    def stop(self) -> None: ...


class LeaseClock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class SystemLeaseClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class LeaseMove(str, enum.Enum):
    CREATE = "CREATE"  # no Lease object: create it holding it
    RENEW = "RENEW"  # we hold it: write a new renewTime
    TAKE = "TAKE"  # free, released, or unchanged for lease_duration on our clock: take it
    WAIT = "WAIT"  # someone else holds it and we saw it change recently


@dataclass(frozen=True)
class Observed:
    """A Lease record as read, and when (our monotonic clock) we saw it change last."""

    record: tuple[str, str, str, int, int] | None
    """(holder, acquireTime, renewTime, leaseDurationSeconds, leaseTransitions)."""
    changed_at: float


def decide_lease(me: str, before: Observed | None, record: tuple[str, str, str, int, int] | None,
                 now: float, lease_duration: float) -> tuple[LeaseMove, Observed | None]:
    """client-go's ``tryAcquireOrRenew`` decision, without I/O.

    ``before``: what we observed last; ``record``: what we read now (None: no Lease).
    Returns the move and the new observation.
    """
    if record is None:
        return LeaseMove.CREATE, None
    seen = before if before is not None and before.record == record else Observed(record, now)
    holder = record[0]
    if holder == me:
        return LeaseMove.RENEW, seen
    if not holder:
        return LeaseMove.TAKE, seen
    if seen.changed_at + lease_duration > now:
        return LeaseMove.WAIT, seen
    return LeaseMove.TAKE, seen


def _stamp(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, tz=timezone.utc)


def _record(lease: Any) -> tuple[str, str, str, int, int]:
    from kubernetes import client

    if lease.spec is None:  # created empty (k8s/scheduler/state.yaml: spec {})
        lease.spec = client.V1LeaseSpec()
    spec = lease.spec
    return (spec.holder_identity or "", str(spec.acquire_time or ""),
            str(spec.renew_time or ""), int(spec.lease_duration_seconds or 0),
            int(spec.lease_transitions or 0))


class LeaseElector:
    def __init__(self, coordination_api: Any, namespace: str, name: str, identity: str,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0, clock: LeaseClock | None = None,
                 request_timeout: float = 5.0) -> None:
        self.api = coordination_api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline = lease_duration, renew_deadline
        self.retry_period, self.timeout = retry_period, request_timeout
        self.clock = clock or SystemLeaseClock()
        self._observed: Observed | None = None
        self._valid_until = float("-inf")
        self._last_write = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was_leading = False
        self.writes = 0

    @property
    def _where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    # -- Actor -------------------------------------------------------------------------

    def leading(self) -> bool:
        with self._lock:
            return self.clock.monotonic() < self._valid_until

    def holder(self) -> str:
        observed = self._observed
        return observed.record[0] if observed and observed.record else "nobody"

    def try_acquire(self) -> bool:
        if self._thread is not None:
            return self.leading()  # the keeper thread does the attempts on its schedule
        return self.tick()

    def tick(self) -> bool:
        """One acquire-or-renew attempt: at most one read and one write."""
        started = self.clock.monotonic()
        try:
            wrote = self._attempt(started)
        except HarnessPoolError as exc:
            log.warning("%s: %s could not renew or acquire: %s", self._where, self.identity, exc)
            wrote = False
        except Exception:  # never let the keeper thread die: the Lease would lapse silently
            log.exception("%s: unexpected error renewing or acquiring it", self._where)
            wrote = False
        if wrote:  # valid from the *start* of the write that succeeded, never longer
            with self._lock:
                self._valid_until = started + self.renew_deadline
        leading = self.leading()
        if leading != self._was_leading:
            log.info("%s %s leadership of %s (holder now: %s)", self.identity,
                     "took" if leading else "lost", self._where, self.holder())
            self._was_leading = leading
        return leading

    def _attempt(self, now: float) -> bool:
        """True when this attempt wrote the Lease with us as holder."""
        from kubernetes import client

        try:
            lease = kube_call(f"read {self._where}", self.api.read_namespaced_lease, self.name,
                              self.namespace, _request_timeout=self.timeout)
            record: tuple[str, str, str, int, int] | None = _record(lease)
        except NotFound:
            lease, record = None, None
        move, observed = decide_lease(self.identity, self._observed, record, now,
                                      self.lease_duration)
        self._observed = observed
        if move is LeaseMove.WAIT:
            return False
        if move is LeaseMove.RENEW and now - self._last_write < self.retry_period * 0.9:
            return False  # renewed within this period already: at most one write per period
        stamp = _stamp(self.clock.wall())
        try:
            if move is LeaseMove.CREATE:
                body = client.V1Lease(
                    metadata=client.V1ObjectMeta(name=self.name),
                    spec=client.V1LeaseSpec(holder_identity=self.identity,
                                            lease_duration_seconds=int(self.lease_duration),
                                            acquire_time=stamp, renew_time=stamp,
                                            lease_transitions=0))
                written = kube_call(f"create {self._where}",
                                    self.api.create_namespaced_lease, self.namespace, body,
                                    _request_timeout=self.timeout)
            else:
                spec = lease.spec
                if move is LeaseMove.TAKE:
                    spec.lease_transitions = (spec.lease_transitions or 0) + 1
                    spec.acquire_time = stamp
                spec.holder_identity = self.identity
                spec.renew_time = stamp
                spec.lease_duration_seconds = int(self.lease_duration)
                written = kube_call(f"update {self._where}", self.api.replace_namespaced_lease,
                                    self.name, self.namespace, lease,
                                    _request_timeout=self.timeout)
        except (Conflict, AlreadyExists):
            log.info("%s: %s lost a race for it", self._where, self.identity)
            return False
        self.writes += 1
        self._last_write = now
        self._observed = Observed(_record(written), now)
        return True

    def release(self) -> None:
        """Give the Lease up (clean shutdown): a successor need not wait for it to expire."""
        self.stop()
        if not self.leading():
            return
        with self._lock:
            self._valid_until = float("-inf")
        try:
            lease = kube_call(f"read {self._where}", self.api.read_namespaced_lease, self.name,
                              self.namespace, _request_timeout=self.timeout)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = ""
                lease.spec.renew_time = _stamp(self.clock.wall())
                kube_call(f"release {self._where}", self.api.replace_namespaced_lease,
                          self.name, self.namespace, lease, _request_timeout=self.timeout)
                log.info("%s released %s", self.identity, self._where)
        except HarnessPoolError as exc:
            log.warning("%s: could not release it (%s); it expires on its own", self._where,
                        exc)

    # -- the keeper thread -------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._keep, name="lease-keeper", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.retry_period)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.timeout + self.retry_period + 5)
        self._thread = None


class FileLock:
    """An exclusive ``flock`` on ``<state>.lock``: the actor for the file state store."""

    def __init__(self, state_path: str | Path, identity: str) -> None:
        self.path = Path(f"{state_path}.lock")
        self.identity = identity
        self._fd: int | None = None

    def leading(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PermanentError(f"cannot open lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.identity}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def start(self) -> None:
        """Nothing to keep: the kernel holds the lock until release or exit."""

    def stop(self) -> None:
        """Nothing to stop."""


class Always:
    """No lock configured (ConfigMap store without a Lease): its writes detect a rival."""

    def leading(self) -> bool:
        return True

    def try_acquire(self) -> bool:
        return True

    def release(self) -> None:
        """Nothing to give back."""

    def holder(self) -> str:
        return "nobody (no Lease configured)"

    def start(self) -> None:
        """Nothing to keep."""

    def stop(self) -> None:
        """Nothing to stop."""
