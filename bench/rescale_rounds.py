"""One rescale round on a local reactive cluster, timed and inspected (shared by the bench
scripts ``bench_rescale`` and ``bench_rescale_hazard``).

A round is: a pod joins (a TaskManager starts; the job goes from 2 to 4), then
leaves (SIGTERM or SIGKILL; the job goes back to 2). For each direction it
records when things happened, from three sources:

- this process: when the TaskManager was spawned or signalled, when the
  JobManager listed it, when the REST API first showed the job at the new scale;
- Flink's REST API: the adaptive scheduler's rescale timeline
  (``/jobs/:id/rescales/history`` and ``.../details/:uuid``: Restarting,
  WaitingForResources, CreatingExecutionGraph, Executing) and every subtask's
  state timestamps (``/jobs/:id/vertices/:vid/subtasktimes``: DEPLOYING,
  INITIALIZING, RUNNING; INITIALIZING -> RUNNING holds state restore and the
  Python workers' start);
- the sidecars: ``time_to_ready`` of each stage they served (StartWorker to the
  harness connected), and the TaskManagers' logs: the refcount hazard
  (``Reference count must not be negative``) and TaskManagers that died on
  their own.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness_pool.flink.jobview import rescale_history
from harness_pool.flink.pod import Pod, PodPhase, Removal
from harness_pool.flink.reactive import ReactiveCluster

HAZARD = "Reference count must not be negative"
_HAZARD_RE = re.compile(re.escape(HAZARD))


@dataclasses.dataclass
class Step:
    """One direction of a round (``up`` or ``down``), times in seconds from ``t0``."""

    direction: str
    how: str
    t0: float  # unix time: TaskManager spawned (up) or signalled (down)
    registered_s: float | None = None  # up: JobManager lists the TaskManager
    rescale_start_s: float | None = None  # first rescale the scheduler started after t0
    rescale_end_s: float | None = None  # last one entered Executing (tasks being deployed)
    phases_s: dict[str, float] = dataclasses.field(default_factory=dict)
    deploying_to_initializing_s: float | None = None
    initializing_to_running_s: float | None = None
    running_s: float | None = None  # every subtask RUNNING (Flink's own timestamps)
    seen_running_s: float | None = None  # the REST API showed the new scale (polling)
    python_ready_s: list[float] = dataclasses.field(default_factory=list)
    rescales: int = 0
    hazard_hits: int = 0
    failovers: int = 0
    error: str = ""


def hazard_count(cluster: ReactiveCluster) -> int:
    """Occurrences of the refcount hazard in every TaskManager's and the JobManager's logs."""
    folders = [cluster.log_dir] + [pod.log_dir for pod in cluster.pods.values()]
    total = 0
    for folder in folders:
        for path in folder.glob("*"):
            if path.is_file() and path.suffix in (".log", ".out", ".stdout"):
                total += len(_HAZARD_RE.findall(path.read_text(errors="replace")))
    return total


def failover_count(cluster: ReactiveCluster) -> int:
    history = cluster.get(f"/jobs/{cluster.job_id()}/exceptions").get("exceptionHistory", {})
    return len(history.get("entries", []))


def _rescale_details(cluster: ReactiveCluster, since_ms: int) -> list[Any]:
    job = cluster.job_id()
    listed = rescale_history(cluster.get(f"/jobs/{job}/rescales/history"))
    details = []
    for r in listed:
        if r.start_ms >= since_ms and r.end_ms is not None:
            entry = cluster.get(f"/jobs/{job}/rescales/details/{r.rescale_id}")
            details.extend(rescale_history({"items": [entry]}))
    return details


def _subtask_times(cluster: ReactiveCluster) -> list[dict[str, int]]:
    job = cluster.job_id()
    out: list[dict[str, int]] = []
    for vertex in cluster.get(f"/jobs/{job}").get("vertices", []):
        times = cluster.get(f"/jobs/{job}/vertices/{vertex['id']}/subtasktimes")
        out.extend(s.get("timestamps", {}) for s in times.get("subtasks", []))
    return out


def fill_from_flink(cluster: ReactiveCluster, step: Step) -> None:
    """Rescale timeline and subtask timestamps for ``step`` (the job is at its new scale)."""
    since_ms = int(step.t0 * 1000) - 500
    rescales = _rescale_details(cluster, since_ms)
    step.rescales = len(rescales)
    if rescales:
        step.rescale_start_s = rescales[0].start_ms / 1000 - step.t0
        end = rescales[-1].end_ms
        step.rescale_end_s = None if end is None else end / 1000 - step.t0
        for rescale in rescales:
            for phase in rescale.phases:
                # The first span (Executing) began long before the rescale and the last
                # one stays open after it: count each span only within the rescale.
                limits = [x for x in (phase.end_ms, rescale.end_ms) if x is not None]
                start = max(phase.start_ms, rescale.start_ms)
                if limits and min(limits) > start:
                    step.phases_s[phase.state] = step.phases_s.get(phase.state, 0.0) + \
                        (min(limits) - start) / 1000
    stamps = [s for s in _subtask_times(cluster) if s.get("RUNNING", 0) >= since_ms]
    if stamps:
        step.running_s = max(s["RUNNING"] for s in stamps) / 1000 - step.t0
        deploy = [s["INITIALIZING"] - s["DEPLOYING"] for s in stamps
                  if s.get("INITIALIZING") and s.get("DEPLOYING")]
        init = [s["RUNNING"] - s["INITIALIZING"] for s in stamps if s.get("INITIALIZING")]
        step.deploying_to_initializing_s = max(deploy) / 1000 if deploy else None
        step.initializing_to_running_s = max(init) / 1000 if init else None


def python_ready(pods: list[Pod], since: float) -> list[float]:
    """``time_to_ready`` of the stages the pods' sidecars started after ``since``."""
    from harness_pool.sidecar.cli import fetch_status

    out = []
    for pod in pods:
        if pod.sidecar is None or not pod.sidecar.alive():
            continue
        for record in fetch_status(pod.sidecar_address, timeout=10).assignments:
            if record.started_at_unix >= since and record.time_to_ready_seconds:
                out.append(record.time_to_ready_seconds)
    return out


def scale_up(cluster: ReactiveCluster, slots: int) -> tuple[Pod, Step]:
    """A pod joins; returns it and the timed step (the job is at 2 x slots after it)."""
    before = time.time()
    pod = cluster.add_pod()
    step = Step("up", "join", pod.taskmanager_started_wall)
    step.registered_s = pod.registered_wall - step.t0
    cluster.wait_parallelism(2 * slots)
    step.seen_running_s = time.time() - step.t0
    fill_from_flink(cluster, step)
    step.python_ready_s = python_ready([pod], before)
    return pod, step


def scale_down(cluster: ReactiveCluster, pod: Pod, how: Removal, slots: int) -> Step:
    """``pod`` leaves by ``how``; returns the timed step (the job is at ``slots`` after it)."""
    step = Step("down", how.value, time.time())
    cluster.remove_pod(pod.name, how)
    cluster.wait_parallelism(slots)
    step.seen_running_s = time.time() - step.t0
    fill_from_flink(cluster, step)
    step.python_ready_s = python_ready(cluster.live_pods(), step.t0)
    return step


@dataclasses.dataclass
class Rounds:
    """What ``run_rounds`` saw: every step, and the TaskManagers that died on their own."""

    steps: list[Step] = dataclasses.field(default_factory=list)
    taskmanager_deaths: list[str] = dataclasses.field(default_factory=list)


def dead_pods(cluster: ReactiveCluster) -> list[str]:
    return [p.name for p in cluster.pods.values() if p.phase is PodPhase.RUNNING
            and p.taskmanager is not None and not p.taskmanager.alive()]


def run_rounds(cluster: ReactiveCluster, rounds: int, slots: int,
               removal: Callable[[int], Removal], label: str, pause: float = 0.0) -> Rounds:
    """``rounds`` times: a pod joins, then leaves by ``removal(round)``.

    After each step it counts new hazard lines and failovers, replaces the pod of a
    TaskManager that died on its own (so the run goes on), and after an error goes
    back to one pod at ``slots`` before the next round. Never raises for one step.
    """
    seen = Rounds()
    hazards, failovers = hazard_count(cluster), failover_count(cluster)
    incidents = len(cluster.incidents)
    for i in range(rounds):
        pod: Pod | None = None
        for direction in ("up", "down"):
            if direction == "down" and pod is None:
                break  # the pod never joined: nothing to take away
            time.sleep(pause)
            try:
                if direction == "up":
                    pod, step = scale_up(cluster, slots)
                else:
                    assert pod is not None
                    step = scale_down(cluster, pod, removal(i), slots)
            except Exception as exc:  # recorded; the run goes on from a known state
                step = Step(direction, "", time.time(), error=f"{type(exc).__name__}: {exc}")
            # TaskManagers the cluster restarted in place while it waited for a scale ...
            seen.taskmanager_deaths += [f"round {i + 1} {direction}: {text}"
                                        for text in cluster.incidents[incidents:]]
            incidents = len(cluster.incidents)
            for name in dead_pods(cluster):  # ... and any that died after: replace the pod
                seen.taskmanager_deaths.append(f"round {i + 1} {direction}: {name} died")
                cluster.pods[name].stop()
                cluster.add_pod()
            now_h, now_f = hazard_count(cluster), failover_count(cluster)
            step.hazard_hits, step.failovers = now_h - hazards, now_f - failovers
            hazards, failovers = now_h, now_f
            seen.steps.append(step)
            nan = float("nan")
            print(f"{label} round {i + 1}/{rounds} {direction} {step.how}: running after "
                  f"{step.running_s or nan:.1f}s (seen {step.seen_running_s or nan:.1f}s), "
                  f"hazard +{step.hazard_hits}, failovers +{step.failovers}"
                  f"{', ERROR ' + step.error if step.error else ''}", file=sys.stderr)
            if step.error:
                for extra in cluster.live_pods()[1:]:
                    extra.stop()
                cluster.wait_parallelism(slots)
                break
    return seen


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(steps: list[Step]) -> dict[str, Any]:
    """Medians per field over the steps that completed."""
    done = [s for s in steps if not s.error]
    fields = ("registered_s", "rescale_start_s", "rescale_end_s", "running_s",
              "seen_running_s", "deploying_to_initializing_s", "initializing_to_running_s")
    out: dict[str, Any] = {"steps": len(steps), "completed": len(done),
                           "errors": [s.error for s in steps if s.error]}
    for name in fields:
        out[name] = median([getattr(s, name) for s in done])
    phases = sorted({p for s in done for p in s.phases_s})
    out["phases_s"] = {p: median([s.phases_s.get(p) for s in done]) for p in phases}
    out["python_ready_s"] = median([median(list(s.python_ready_s)) for s in done])
    out["hazard_hits"] = sum(s.hazard_hits for s in steps)
    out["failovers"] = sum(s.failovers for s in steps)
    return out


def as_json(steps: list[Step]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(s) for s in steps]


def out_dir(workdir: Path) -> Path:
    return workdir / "out"
