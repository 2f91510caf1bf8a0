"""Helpers for proxy tests: a sidecar in fixed-endpoint mode with booted harnesses."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import apache_beam as beam

from harness_pool.sidecar.server import Sidecar
from harness_pool.v1 import pool_pb2
from tests.proxy.boots import BootLoop, beam_boot
from tests.sidecar.beam_helpers import run


def externals(sidecar: Sidecar) -> dict[str, pool_pb2.WorkerStatus]:
    return {w.pool_id: w for w in sidecar.status().workers if w.kind == "external"}


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Polls a condition owned by another process (no event to wait on across processes)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.02)


def wait_waiting(sidecar: Sidecar, *ids: str, timeout: float = 60.0) -> None:
    wait_for(lambda: all(externals(sidecar)[i].state == "waiting" for i in ids), timeout,
             f"{ids} waiting in GetProvisionInfo")


def served(sidecar: Sidecar) -> dict[str, int]:
    return {k: w.assignments_served for k, w in externals(sidecar).items()}


def start_beam_boots(sidecar: Sidecar, boots: Callable[[list[str]], BootLoop], *ids: str,
                     extra: tuple[str, ...] = ()) -> list[BootLoop]:
    return [boots(beam_boot(i, sidecar.address, *extra)) for i in ids]


class Rendezvous(beam.DoFn):
    """Writes ``mine`` into ``folder`` then waits (up to 60 s) for ``theirs`` to appear there.

    Two jobs using it with crossed names can only both finish if they run at the same
    time, each on its own harness.
    """

    def __init__(self, folder: str, mine: str, theirs: str) -> None:
        self.folder, self.mine, self.theirs = folder, mine, theirs

    def process(self, element):
        Path(self.folder, self.mine).write_text(str(element))
        deadline = time.monotonic() + 60
        while not Path(self.folder, self.theirs).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.theirs} never arrived: jobs did not overlap")
            time.sleep(0.01)
        yield element


class BackgroundJob:
    """A pipeline running in a thread; ``errors`` holds what it raised."""

    def __init__(self, address: str, build: Callable[[beam.Pipeline], None]) -> None:
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(address, build))
        self.thread.start()

    def _run(self, address: str, build: Callable[[beam.Pipeline], None]) -> None:
        try:
            run(address, build)
        except BaseException as exc:  # reported by the test through ``errors``
            self.errors.append(exc)

    def join(self, timeout: float = 60) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the pipeline never finished"


def wait_for_gate(x: int, path: str) -> int:
    """A DoFn body that holds its bundle until ``path`` exists (at most 60 s)."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return x
