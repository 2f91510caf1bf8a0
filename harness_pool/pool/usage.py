"""Per-seat usage of the pooled workers: cumulative CPU seconds and current RSS.

A *seat* (``PoolCore``: the lowest free index when a worker takes a stage) is
what the metrics are labelled by (``slot``), so a series lives as long as the
sidecar, whatever workers come and go. ``SeatMeter`` turns readings of worker
processes into per-seat figures:

- CPU: each worker's CPU is counted from the moment it takes its seat (the
  reading at ``seat`` is its baseline: the CPU it spent warming, importing Beam
  or waiting idle, is not counted), up to its last reading (at ``leave``: when
  its harness finished, when it is stopped). The seat's total only grows: it
  is a Prometheus counter that includes workers long gone.
- RSS: the current resident memory of the worker in the seat; 0 when the seat
  is free.

A reading whose ``start_ticks`` differ from the seat's worker is another
process that reused the pid: the worker is gone, nothing is charged.

Pure: readings come in as arguments; no /proc, no clock, no lock (the caller,
``harness_pool.sidecar.usage``, holds one around every call).
"""

from __future__ import annotations

import dataclasses

from harness_pool.pool.procstat import ProcUsage


@dataclasses.dataclass
class _Tenant:
    seat: int
    pid: int
    start_ticks: int
    cpu_seconds: float  # at the last reading


@dataclasses.dataclass(frozen=True)
class Charge:
    """CPU seconds to add to a seat's counter."""

    seat: int
    cpu_seconds: float


class SeatMeter:
    def __init__(self, seats: int) -> None:
        self.cpu: dict[int, float] = {i: 0.0 for i in range(seats)}
        self.rss: dict[int, int] = {i: 0 for i in range(seats)}
        self._tenants: dict[str, _Tenant] = {}

    def tenants(self) -> dict[str, int]:
        """Pool id -> pid of every worker in a seat."""
        return {pool_id: t.pid for pool_id, t in self._tenants.items()}

    def seat(self, pool_id: str, seat: int, pid: int, reading: ProcUsage | None) -> None:
        """``pool_id`` (process ``pid``) takes ``seat``; ``reading``: its usage now (None:
        already gone, nothing to count)."""
        self.cpu.setdefault(seat, 0.0)
        self.rss.setdefault(seat, 0)
        if reading is None:
            return
        self._tenants[pool_id] = _Tenant(seat, pid, reading.start_ticks, reading.cpu_seconds)
        self.rss[seat] = reading.rss_bytes

    def sample(self, pool_id: str, reading: ProcUsage | None) -> Charge | None:
        """A periodic reading of a seated worker: the CPU since the last one."""
        tenant = self._tenants.get(pool_id)
        if tenant is None:
            return None
        if reading is None or reading.start_ticks != tenant.start_ticks:
            self._vacate(pool_id)  # gone: its last reading was its last word
            return None
        self.rss[tenant.seat] = reading.rss_bytes
        return self._charge(tenant, reading)

    def leave(self, pool_id: str, reading: ProcUsage | None) -> Charge | None:
        """The worker leaves its seat; ``reading`` (if it is still there) is its last."""
        tenant = self._tenants.get(pool_id)
        if tenant is None:
            return None
        charge = None
        if reading is not None and reading.start_ticks == tenant.start_ticks:
            charge = self._charge(tenant, reading)
        self._vacate(pool_id)
        return charge

    def _charge(self, tenant: _Tenant, reading: ProcUsage) -> Charge | None:
        delta = reading.cpu_seconds - tenant.cpu_seconds
        if delta <= 0:
            return None
        tenant.cpu_seconds = reading.cpu_seconds
        self.cpu[tenant.seat] += delta
        return Charge(tenant.seat, delta)

    def _vacate(self, pool_id: str) -> None:
        tenant = self._tenants.pop(pool_id)
        if not any(t.seat == tenant.seat for t in self._tenants.values()):
            self.rss[tenant.seat] = 0
