"""Prometheus metrics of the scheduler, on a registry passed in (default: a private one).

``heartbeat`` is the liveness signal: the run loop beats on every iteration,
and while it waits or calls a backend it *holds* the beat for a bounded time
(``hold(seconds)``): a thread ("heartbeat") keeps beating until the hold ends
or its bound passes, so ``/healthz`` stays green through sleeps and slow steps and
turns 503 only when the loop is stuck past every bound it announced.

Names are a contract (alert rules use them): existing names never change.
``last_savepoint_timestamp`` is the unix time of the newest completed savepoint
the scheduler knows per job (set at startup from the state, and on every
completed savepoint).

Threads: metric objects are thread-safe (prometheus_client); a hold's
"heartbeat" thread lives only as long as the hold and is joined when it ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
BEAT_EVERY = 5.0


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.cycle_seconds = Histogram("harness_pool_scheduler_cycle_seconds",
                                       "Duration of a whole cycle", ["cycle", "result"],
                                       buckets=_BUCKETS, registry=r)
        self.step_seconds = Histogram("harness_pool_scheduler_step_seconds",
                                      "Duration of one step", ["cycle", "action", "job"],
                                      buckets=_BUCKETS, registry=r)
        self.savepoint_seconds = Histogram("harness_pool_scheduler_savepoint_seconds",
                                           "From savepoint request to completion", ["job"],
                                           buckets=_BUCKETS, registry=r)
        self.savepoint_failures = Counter("harness_pool_scheduler_savepoint_failures",
                                          "Failed savepoint attempts", ["job"], registry=r)
        self.downtime_seconds = Gauge("harness_pool_scheduler_streaming_downtime_seconds",
                                      "Downtime of a stopped job in the last cycle", ["job"],
                                      registry=r)
        self.cycles = Counter("harness_pool_scheduler_cycles", "Finished cycles",
                              ["cycle", "result"], registry=r)
        self.heartbeat = Gauge("harness_pool_scheduler_heartbeat_timestamp_seconds",
                               "Last iteration of the run loop (unix time)", registry=r)
        self.last_savepoint = Gauge("harness_pool_scheduler_last_savepoint_timestamp_seconds",
                                    "Newest completed savepoint the scheduler knows (unix time)",
                                    ["job"], registry=r)
        self.requests = Counter("harness_pool_scheduler_requests",
                                "Finished manual requests (savepoints trigger|resume|dispose)",
                                ["action", "result"], registry=r)
        self.leader = Gauge("harness_pool_scheduler_leader",
                            "1 while this replica is the one that acts", registry=r)

    def beat(self) -> None:
        self.heartbeat.set(time.time())

    @contextlib.contextmanager
    def hold(self, seconds: float) -> Iterator[None]:
        """The loop is busy for at most ``seconds`` (a sleep, a bounded call): keep beating
        until it returns or the bound passes, whichever is first."""
        self.beat()
        if seconds <= BEAT_EVERY:
            yield
            self.beat()
            return
        until = time.time() + seconds
        done = threading.Event()

        def keep_beating() -> None:
            while not done.wait(BEAT_EVERY) and time.time() <= until:
                self.beat()

        beater = threading.Thread(target=keep_beating, name="heartbeat", daemon=True)
        beater.start()
        try:
            yield
        finally:
            done.set()
            beater.join()
            self.beat()


def serve(metrics: SchedulerMetrics, port: int, stale_after: float = 120.0,
          host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` on a daemon thread; returns the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                body, status, ctype = generate_latest(metrics.registry), 200, CONTENT_TYPE_LATEST
            elif self.path.startswith("/healthz"):
                age = time.time() - (metrics.heartbeat._value.get() or 0.0)
                ok = age <= stale_after
                body = (f"ok: last loop {age:.1f} s ago\n" if ok else
                        f"stuck: last loop {age:.1f} s ago\n").encode()
                status, ctype = (200 if ok else 503), "text/plain"
            else:
                body, status, ctype = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
