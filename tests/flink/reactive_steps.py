"""Steps shared by the reactive-mode tests: a pod joins, the job follows, the counts hold.

Every test that uses the session's ``reactive_cluster`` starts from one pod at
parallelism 2 and must leave it so (``back_to_one_pod``), even when it fails.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from harness_pool.flink.keyed_output import (
    KeyedOutput,
    attempts_since,
    count_problems,
    read_folder,
)
from harness_pool.flink.pod import Pod, PodPhase
from harness_pool.flink.reactive import REFCOUNT_RACE, ReactiveCluster
from harness_pool.sidecar.cli import fetch_status, status_dict
from tests.flink_fixtures import REACTIVE_KEYS

SLOTS = 2


def out_dir(cluster: ReactiveCluster) -> Path:
    return cluster.workdir / "out"


def sidecar_status(pod: Pod) -> dict[str, Any]:
    """The pod's sidecar status, as ``harness-pool status --json`` prints it."""
    return status_dict(fetch_status(pod.sidecar_address, timeout=10))


def last_restore(cluster: ReactiveCluster) -> tuple[int, float]:
    """(checkpoint id, unix time) of the job's latest restore; (-1, 0.0) before any.

    A rescale restores from the latest *completed* checkpoint, which may be the one
    an earlier rescale restored from (no checkpoint completed in between): compare
    restore times, not ids.
    """
    restored = cluster.get(f"/jobs/{cluster.job_id()}/checkpoints").get("latest", {}) \
        .get("restored") or {}
    return int(restored.get("id", -1)), float(restored.get("restore_timestamp", 0)) / 1000


def wait_counting_at(cluster: ReactiveCluster, parallelism: int, since: float,
                     timeout: float = 120.0) -> KeyedOutput:
    """Waits until every keyed subtask of an attempt opened after ``since`` at
    ``parallelism`` has counted records (a subtask opens its Python function, and its
    file, with its first bundle)."""
    deadline = time.monotonic() + timeout
    while True:
        out = read_folder(out_dir(cluster))
        fresh = [a for a in attempts_since(out, since) if a.parallelism == parallelism]
        if len({a.subtask for a in fresh if a.records}) == parallelism:
            return out
        assert time.monotonic() < deadline, \
            f"no records counted at parallelism {parallelism} within {timeout:.0f} s " \
            f"(attempts since: {[(a.name, a.records) for a in attempts_since(out, since)]})"
        time.sleep(0.5)


def check_counts(cluster: ReactiveCluster) -> KeyedOutput:
    """Every key's count continues from the checkpoint: replays allowed, never a reset."""
    out = read_folder(out_dir(cluster))
    problems = count_problems(out)
    assert not problems, "\n".join(problems)
    assert len(out.counts) == REACTIVE_KEYS, f"keys counted: {sorted(out.counts)}"
    return out


def back_to_one_pod(cluster: ReactiveCluster) -> None:
    """Stops every pod but the first (reaped) and waits for parallelism 2 again."""
    first, *others = list(cluster.pods.values())
    for pod in others:
        if pod.phase is not PodPhase.STOPPED:
            pod.stop()
    assert first.phase is PodPhase.RUNNING, f"the first pod is {first.phase.value}"
    cluster.wait_parallelism(SLOTS)
    check_incidents(cluster)


def check_incidents(cluster: ReactiveCluster) -> None:
    """A TaskManager may die on its own only of flink-python's refcount race at a rescale
    (restarted in place, as Kubernetes would; docs/reactive.md); any other death fails."""
    other = [i for i in cluster.incidents if REFCOUNT_RACE not in i]
    assert not other, f"TaskManagers died on their own: {other}"
    if cluster.incidents:
        warnings.warn(f"restarted after flink-python's refcount race: {cluster.incidents}",
                      stacklevel=2)
