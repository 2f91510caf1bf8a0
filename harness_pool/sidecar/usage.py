"""The usage sampler: per-slot CPU seconds and RSS of the pooled workers, from /proc.

Exports ``harness_pool_worker_cpu_seconds_total{slot}`` (counter) and
``harness_pool_worker_rss_bytes{slot}`` (gauge), where ``slot`` is the seat a
worker takes with its stage (``PoolCore``: 0..--workers-1 while no more stages
than --workers run at once). Both series exist from the start for every seat
0..--workers-1, at 0.

What is counted (see ``harness_pool.pool.usage`` and ``procstat``): a worker's
user + system CPU (all threads, and its children once it has reaped them)
from the moment it takes its seat until its harness finishes or it is
stopped. Warm and idle workers are not counted anywhere: their CPU (a fork,
or with ``--spawn exec`` about a second of imports per worker) is the pool's
overhead, not the job's load, and would make an idle job look busy to an HPA.
The container's own CPU metrics (cAdvisor) include it.

When: a reading at the seat's taking (the baseline), one every ``interval``
seconds, and a last one when the harness reports Finished or the sidecar
stops the worker; a worker that dies on its own loses at most its last
``interval`` of CPU.

Threads: the sampler thread (a ``Ticker``) reads /proc every ``interval``; the pool calls
``seated``/``unseated`` from gRPC and supervisor threads. ``_lock`` guards
the ``SeatMeter``; /proc is read outside it; metrics are updated inside it
(prometheus_client's own locks are leaves).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from harness_pool.pool.procstat import ProcUsage, read_usage
from harness_pool.pool.usage import Charge, SeatMeter
from harness_pool.sidecar.metrics import SidecarMetrics
from harness_pool.sidecar.ticker import Ticker


class UsageSampler:
    """``SeatHooks`` for the pool, and the thread that samples seated workers."""

    def __init__(self, metrics: SidecarMetrics, seats: int, interval: float,
                 read: Callable[[int], ProcUsage | None] = read_usage) -> None:
        self.metrics = metrics
        self.meter = SeatMeter(seats)
        self._read = read
        self._lock = threading.Lock()
        self._ticker = Ticker("hp-usage", interval, self.sample_once)
        with self._lock:
            self._export_all()

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()

    # -- SeatHooks --------------------------------------------------------------

    def seated(self, pool_id: str, seat: int, pid: int) -> None:
        reading = self._read(pid) if pid else None
        with self._lock:
            self.meter.seat(pool_id, seat, pid, reading)
            self._export_seat(seat)

    def unseated(self, pool_id: str) -> None:
        with self._lock:
            pid = self.meter.tenants().get(pool_id)
        if pid is None:
            return
        reading = self._read(pid)
        with self._lock:
            self._apply(self.meter.leave(pool_id, reading))
            self._export_all()

    # -- sampling ---------------------------------------------------------------

    def sample_once(self) -> None:
        """Reads every seated worker once and charges its seat."""
        with self._lock:
            tenants = self.meter.tenants()
        readings = {pool_id: self._read(pid) for pool_id, pid in tenants.items()}
        with self._lock:
            for pool_id, reading in readings.items():
                if self.meter.tenants().get(pool_id) == tenants[pool_id]:
                    self._apply(self.meter.sample(pool_id, reading))
            self._export_all()

    # -- metrics (under _lock) --------------------------------------------------

    def _apply(self, charge: Charge | None) -> None:
        if charge is not None:
            self.metrics.worker_cpu.labels(str(charge.seat)).inc(charge.cpu_seconds)

    def _export_seat(self, seat: int) -> None:
        self.metrics.worker_cpu.labels(str(seat))  # the series exists from its first seat
        self.metrics.worker_rss.labels(str(seat)).set(self.meter.rss.get(seat, 0))

    def _export_all(self) -> None:
        for seat in self.meter.rss:
            self._export_seat(seat)
