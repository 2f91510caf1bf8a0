"""Per-seat usage: /proc parsing on real tiny processes, and the pure ``SeatMeter``."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from harness_pool.pool.procstat import PAGE_SIZE, ProcUsage, parse_stat, read_usage
from harness_pool.pool.usage import Charge, SeatMeter

# -- /proc/<pid>/stat ------------------------------------------------------------------

_BURN = """
import sys, time
t = time.process_time()
while time.process_time() - t < float(sys.argv[1]):
    pass
print("burnt", flush=True)
sys.stdin.readline()
"""


def test_parse_stat_of_a_name_with_spaces_and_parentheses() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss ...
    raw = (b"4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 10 0 0 0 "
           b"250 50 30 20 20 0 3 0 123456 1000000 777 18446744073709551615")
    usage = parse_stat(raw, ticks_per_second=100, page_size=4096)
    assert usage == ProcUsage(cpu_seconds=3.5, rss_bytes=777 * 4096, start_ticks=123456)


@pytest.mark.parametrize("raw", [b"", b"4242 no parenthesis here", b"1 (x) S 1 2 3"])
def test_parse_stat_refuses_what_is_not_a_stat_line(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_stat(raw)


def test_read_usage_of_real_processes() -> None:
    burner = subprocess.Popen([sys.executable, "-c", _BURN, "0.5"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert burner.stdout is not None and burner.stdout.readline().strip() == "burnt"
        time.sleep(0.2)  # the sleeper is up and idle
        busy, idle = read_usage(burner.pid), read_usage(sleeper.pid)
        assert busy is not None and idle is not None
        assert busy.cpu_seconds >= 0.45, busy  # it burnt at least 0.5 s by its own clock
        assert idle.cpu_seconds < busy.cpu_seconds
        assert busy.rss_bytes >= 100 * PAGE_SIZE and idle.rss_bytes >= 100 * PAGE_SIZE
        assert busy.start_ticks != idle.start_ticks or burner.pid != sleeper.pid
        me = read_usage(os.getpid())
        assert me is not None and me.start_ticks <= busy.start_ticks
    finally:
        for proc in (burner, sleeper):
            proc.communicate("\n", timeout=30)
    assert read_usage(burner.pid) is None, "a reaped process has no /proc entry"


def test_a_child_reaped_by_the_process_counts_in_its_cpu() -> None:
    """``cutime``: a worker's subprocess counts once the worker has waited for it."""
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1], '0.5'],"
         " input='\\n', text=True, check=True); print('done', flush=True); "
         "sys.stdin.readline()", _BURN],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        lines = [parent.stdout.readline().strip() for _ in range(2)]
        assert lines == ["burnt", "done"]
        usage = read_usage(parent.pid)
        assert usage is not None and usage.cpu_seconds >= 0.45, usage
    finally:
        parent.communicate("\n", timeout=30)


# -- the pure meter ----------------------------------------------------------------------


def r(cpu: float, rss: int = 100, start: int = 7) -> ProcUsage:
    return ProcUsage(cpu_seconds=cpu, rss_bytes=rss, start_ticks=start)


@pytest.mark.parametrize(("steps", "cpu", "rss", "charges"), [
    pytest.param([("seat", "w1", 0, r(1.5)), ("sample", "w1", r(2.0)), ("sample", "w1", r(3.0))],
                 {0: 1.5, 1: 0.0}, {0: 100, 1: 0}, [0.5, 1.0],
                 id="cpu-before-the-seat-is-not-counted"),
    pytest.param([("seat", "w1", 0, r(1.0)), ("sample", "w1", r(2.0)), ("leave", "w1", r(2.5))],
                 {0: 1.5, 1: 0.0}, {0: 0, 1: 0}, [1.0, 0.5],
                 id="the-last-reading-at-leave-counts-and-rss-drops-to-0"),
    pytest.param([("seat", "w1", 0, r(1.0)), ("leave", "w1", r(3.0)),
                  ("seat", "w2", 0, r(0.2, rss=50)), ("sample", "w2", r(1.2, rss=60))],
                 {0: 3.0, 1: 0.0}, {0: 60, 1: 0}, [2.0, 1.0],
                 id="a-seat-adds-up-its-successive-workers"),
    pytest.param([("seat", "w1", 1, r(1.0)), ("sample", "w1", r(5.0, start=9))],
                 {0: 0.0, 1: 0.0}, {0: 0, 1: 0}, [],
                 id="a-reused-pid-is-not-the-worker"),
    pytest.param([("seat", "w1", 0, r(1.0)), ("sample", "w1", None), ("sample", "w1", r(9.0))],
                 {0: 0.0, 1: 0.0}, {0: 0, 1: 0}, [],
                 id="a-vanished-worker-is-forgotten"),
    pytest.param([("seat", "w1", 0, None), ("sample", "w1", r(5.0))],
                 {0: 0.0, 1: 0.0}, {0: 0, 1: 0}, [],
                 id="gone-before-its-seat"),
    pytest.param([("seat", "w1", 0, r(1.0)), ("seat", "w2", 0, r(0.0, rss=42)),
                  ("leave", "w1", r(1.0))],
                 {0: 0.0, 1: 0.0}, {0: 42, 1: 0}, [],
                 id="a-late-leave-keeps-the-new-tenants-rss"),
    pytest.param([("seat", "w1", 3, r(0.0)), ("sample", "w1", r(2.0))],
                 {0: 0.0, 1: 0.0, 3: 2.0}, {0: 0, 1: 0, 3: 100}, [2.0],
                 id="an-overflow-seat-appears-when-taken"),
])
def test_seat_meter(steps: list[tuple], cpu: dict[int, float], rss: dict[int, int],
                    charges: list[float]) -> None:
    meter = SeatMeter(seats=2)
    got: list[Charge | None] = []
    for step in steps:
        if step[0] == "seat":
            meter.seat(step[1], step[2], 1000, step[3])
        elif step[0] == "sample":
            got.append(meter.sample(step[1], step[2]))
        else:
            got.append(meter.leave(step[1], step[2]))
    assert meter.cpu == pytest.approx(cpu)
    assert meter.rss == rss
    assert [c.cpu_seconds for c in got if c is not None] == pytest.approx(charges)
