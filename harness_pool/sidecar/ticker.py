"""``Ticker``: one daemon thread that runs a pass every ``interval`` seconds until stopped.

For the sidecar's housekeeping (the runner watch, the usage sampler). A pass that
raises is logged and the next one runs on time: one bad pass never ends the thread.
``stop`` is bounded (it waits at most ``join_timeout`` for a pass in progress).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

_LOG = logging.getLogger("harness_pool.sidecar")


class Ticker:
    def __init__(self, name: str, interval: float, tick: Callable[[], object],
                 join_timeout: float = 5.0) -> None:
        self.name = name
        self.interval = interval
        self._tick = tick
        self._join_timeout = join_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self._join_timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._tick()
            except Exception:  # one bad pass must not end the thread
                _LOG.exception("%s: a pass failed; the next one runs in %.1fs", self.name,
                               self.interval)
