"""Fixtures for sidecar tests: a real sidecar on a free port, real Beam runners.

``sidecar_factory`` starts ``Sidecar`` objects in this process (real gRPC
server on port 0, real worker processes) and, at teardown, stops them and
checks that every worker process they started is gone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from harness_pool.pool import reaping
from harness_pool.sidecar.server import Sidecar
from harness_pool.sidecar.settings import SidecarSettings


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def process_marks(pids: Iterable[int]) -> dict[int, int]:
    """The processes among ``pids`` running now, each with its start time.

    Pids are reused quickly here (``pid_max`` is 32768 and a session starts
    thousands of processes): a leak check must compare the process, not the number.
    """
    marks = {}
    for pid in pids:
        ticks = reaping.start_ticks(pid)
        if ticks is not None and reaping.state(pid) != "Z":
            marks[pid] = ticks
    return marks


def still_running(marks: dict[int, int]) -> list[int]:
    """The processes of ``marks`` that still run (the same process, not a zombie)."""
    return [pid for pid, ticks in marks.items() if reaping.is_same(pid, ticks)]


def stop_all(started: list[Sidecar]) -> None:
    """Stops every sidecar and fails if any worker process it started is still alive."""
    marks: dict[int, int] = {}
    for sidecar in started:
        pids = {w.pid for w in sidecar.status().workers if w.pid}
        launcher = sidecar._owned_launcher
        if launcher is not None:
            pids.update(launcher.helper_pids())  # fork servers
        marks.update(process_marks(pids))
        sidecar.stop()
    leaked = still_running(marks)
    assert not leaked, f"worker or fork-server processes left behind: {leaked}"


@pytest.fixture
def sidecar_factory() -> Iterator[Callable[..., Sidecar]]:
    started: list[Sidecar] = []

    def make(warm: bool = True, **kwargs: Any) -> Sidecar:
        kwargs.setdefault("port", 0)
        kwargs.setdefault("workers", 2)
        kwargs.setdefault("drain_timeout", 2.0)
        kwargs.setdefault("stop_grace", 2.0)
        sidecar = Sidecar(SidecarSettings(**kwargs))
        started.append(sidecar)
        sidecar.start()
        if warm:
            assert sidecar.wait_warm(timeout=90), f"pool never got warm: {sidecar.status()}"
        return sidecar

    try:
        yield make
    finally:
        stop_all(started)


@pytest.fixture
def sidecar(sidecar_factory: Callable[..., Sidecar]) -> Sidecar:
    return sidecar_factory()
