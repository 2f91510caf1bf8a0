"""``Ticker``: housekeeping passes go on after a failing one; stop is bounded."""

from __future__ import annotations

import threading
import time

from harness_pool.sidecar.ticker import Ticker


def test_a_failing_pass_does_not_end_the_thread_and_stop_ends_it() -> None:
    calls: list[float] = []
    done = threading.Event()

    def tick() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("the first pass fails")
        if len(calls) >= 3:
            done.set()

    ticker = Ticker("hp-test-ticker", 0.01, tick)
    ticker.start()
    assert done.wait(10), f"passes after a failure: {len(calls)}"
    ticker.stop()
    n = len(calls)
    time.sleep(0.1)
    assert len(calls) == n, "passes after stop"
    assert not any(t.name == "hp-test-ticker" for t in threading.enumerate())


def test_stop_before_start_and_twice_is_harmless() -> None:
    ticker = Ticker("hp-test-idle", 1.0, lambda: None)
    ticker.stop()
    ticker.stop()
