"""What Flink's REST API says about a running job's scale, read without any I/O.

Pure functions over the JSON of ``GET /jobs/:jobid`` and
``GET /jobs/:jobid/rescales/history``; the shells (``reactive``, the tests, the
benchmarks) fetch and pass the payloads in.

How to read a vertex's scale (checked on Flink 2.3 in reactive mode): the
``parallelism`` field follows the adaptive scheduler at once, but a subtask
counts only once it is RUNNING, or FINISHED: a ``NumberSequenceSource`` keeps
the number of splits it was first started with, so after a rescale from 2 to 4
two of its four subtasks have nothing to read and finish at once. A vertex is
*at* parallelism ``n`` when its parallelism is ``n`` and all ``n`` subtasks are
RUNNING or FINISHED, with at least one RUNNING in the job.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any


class JobStatus(enum.Enum):
    """Flink's job states (``JobStatus``), with the ones a job never leaves marked."""

    INITIALIZING = "INITIALIZING"
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    FAILING = "FAILING"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELED = "CANCELED"
    FINISHED = "FINISHED"
    RESTARTING = "RESTARTING"
    SUSPENDED = "SUSPENDED"
    RECONCILING = "RECONCILING"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.FAILED, JobStatus.CANCELED, JobStatus.FINISHED)


@dataclasses.dataclass(frozen=True)
class VertexScale:
    """One job vertex: its parallelism and how many of its subtasks are in each state."""

    name: str
    parallelism: int
    tasks: Mapping[str, int]

    @property
    def running(self) -> int:
        return int(self.tasks.get("RUNNING", 0))

    @property
    def settled(self) -> int:
        """Subtasks RUNNING or FINISHED (a source without a split finishes at once)."""
        return self.running + int(self.tasks.get("FINISHED", 0))

    def at(self, parallelism: int) -> bool:
        return self.parallelism == parallelism and self.settled == parallelism


@dataclasses.dataclass(frozen=True)
class JobScale:
    job_id: str
    status: JobStatus
    vertices: tuple[VertexScale, ...]

    def at(self, parallelism: int) -> bool:
        """RUNNING with every vertex at ``parallelism`` (see the module docstring)."""
        return (self.status is JobStatus.RUNNING and bool(self.vertices)
                and all(v.at(parallelism) for v in self.vertices)
                and any(v.running for v in self.vertices))

    def describe(self) -> str:
        """One line for logs and assertion messages."""
        parts = [f"{v.name[:40]}: p={v.parallelism} running+finished={v.settled}"
                 for v in self.vertices]
        return f"job {self.job_id} {self.status.value}; " + "; ".join(parts)


def job_scale(job: Mapping[str, Any]) -> JobScale:
    """Reads ``GET /jobs/:jobid``."""
    vertices = tuple(
        VertexScale(str(v.get("name", v.get("id", "?"))), int(v.get("parallelism", 0)),
                    dict(v.get("tasks", {})))
        for v in job.get("vertices", ()))
    return JobScale(str(job.get("jid", "")), JobStatus(job.get("state", "CREATED")), vertices)


@dataclasses.dataclass(frozen=True)
class RescalePhase:
    """A span of the adaptive scheduler's state during one rescale (Flink 2.3 timeline)."""

    state: str
    start_ms: int
    end_ms: int | None

    @property
    def seconds(self) -> float | None:
        return None if self.end_ms is None else (self.end_ms - self.start_ms) / 1000.0


@dataclasses.dataclass(frozen=True)
class Rescale:
    """One entry of ``/jobs/:jobid/rescales/history``, reduced to what a benchmark needs."""

    rescale_id: str
    trigger: str
    status: str
    start_ms: int
    end_ms: int | None
    phases: tuple[RescalePhase, ...]
    parallelism: Mapping[str, tuple[int, int]]  # vertex -> (before, after)


def rescale_history(payload: Mapping[str, Any]) -> list[Rescale]:
    """Reads ``GET /jobs/:jobid/rescales/history`` (a JSON list: pass it as ``{"items": [...]}``)
    or one ``.../rescales/details/:uuid`` each as an item; oldest first.

    Field names are Flink 2.3's ``JobRescaleDetails``. The history endpoint leaves
    ``vertices`` and ``schedulerStates`` empty; the details endpoint fills them.
    Unknown shapes give an empty list: the timeline is an aid for benchmarks,
    never a test oracle.
    """
    entries = payload.get("items") or []
    out = [_rescale(e) for e in entries if isinstance(e, Mapping)]
    return sorted(out, key=lambda r: r.start_ms)


def _rescale(entry: Mapping[str, Any]) -> Rescale:
    phases = tuple(
        RescalePhase(str(s.get("state", "?")), int(s.get("enterTimestampInMillis") or 0),
                     _opt_int(s.get("leaveTimestampInMillis")))
        for s in _seq(entry.get("schedulerStates")))
    parallelism = {
        str(v.get("jobVertexName", v.get("jobVertexId", "?"))):
            (int(v.get("preRescaleParallelism") or 0), int(v.get("postRescaleParallelism") or 0))
        for v in _seq(entry.get("vertices"))}
    return Rescale(
        rescale_id=str(entry.get("rescaleUuid", "")),
        trigger=str(entry.get("triggerCause", "")),
        status=str(entry.get("terminalState") or ""),
        start_ms=int(entry.get("startTimestampInMillis") or 0),
        end_ms=_opt_int(entry.get("endTimestampInMillis")),
        phases=phases, parallelism=parallelism)


def _seq(value: object) -> Sequence[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        return [v for v in value.values() if isinstance(v, Mapping)]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, Mapping)]
    return []


def _opt_int(value: object) -> int | None:
    if value is None or value == "" or value == -1:
        return None
    return int(str(value))
