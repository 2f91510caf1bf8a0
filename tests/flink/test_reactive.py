"""Reactive mode on a real application cluster: TaskManager pods with their own sidecars
join and leave a running keyed-state PyFlink job.

The session's ``reactive_cluster`` runs ``reactive_count.py`` on pod 1 (2 slots). Each
test adds pod 2 (a TaskManager and its own sidecar): the job rescales to 4 on every
vertex, and pod 2's sidecar serves the new slots' Python stages; then pod 2 leaves
(SIGTERM, or SIGKILL of its TaskManager) and the job goes back to 2, restoring from a
checkpoint: every key continues from its checkpointed count (replays allowed, never a
reset). How pod 2's sidecar deals with a vanished TaskManager is checked in
``test_reactive_recycle.py``.
"""

from __future__ import annotations

import time

import pytest

from harness_pool.flink.jobview import JobScale
from harness_pool.flink.pod import Pod, Removal
from harness_pool.flink.reactive import ReactiveCluster
from tests.flink.reactive_steps import (
    SLOTS,
    back_to_one_pod,
    check_counts,
    last_restore,
    sidecar_status,
    wait_counting_at,
)
from tests.sidecar_fixtures import pid_alive

pytestmark = [pytest.mark.slow, pytest.mark.flink]


def join(cluster: ReactiveCluster) -> tuple[Pod, JobScale]:
    """Pod 2 joins; the job runs at 4 on every vertex, pod 2's sidecar serving 2 stages."""
    pod = cluster.add_pod()
    scale = cluster.wait_parallelism(2 * SLOTS)
    for vertex in scale.vertices:  # a source without a split is FINISHED, not RUNNING
        assert vertex.parallelism == 4 and vertex.settled == 4, scale.describe()
    status = sidecar_status(pod)
    running = [a for a in status["assignments"] if a["outcome"] == "running"]
    assert len(running) == SLOTS, f"{pod.name}'s sidecar: {status['assignments']}"
    # one runner worker per slot (ids count up per TaskManager: a job restart after a
    # failure elsewhere moves them on, so only their distinctness is asserted)
    assert len({a["runner_worker_id"] for a in running}) == SLOTS, running
    assert all(pid_alive(a["pid"]) for a in running)
    return pod, scale


def served_by(pod_status: dict, attempt_pids: set[int]) -> set[int]:
    return {a["pid"] for a in pod_status["assignments"]} & attempt_pids


@pytest.mark.parametrize("how", [Removal.SIGTERM, Removal.SIGKILL], ids=lambda r: r.value)
def test_pod_joins_and_leaves_keyed_counts_continue(reactive_cluster: ReactiveCluster,
                                                    how: Removal) -> None:
    cluster = reactive_cluster
    cluster.wait_parallelism(SLOTS)
    joined_at = time.time()
    try:
        pod, _ = join(cluster)
        out = wait_counting_at(cluster, 4, joined_at)
        at_four = {a.pid for a in out.attempts if a.opened_at >= joined_at
                   and a.parallelism == 4}
        assert served_by(sidecar_status(pod), at_four), \
            "no keyed subtask at parallelism 4 ran in a process of pod 2's sidecar"
        checkpoint, restored_at = last_restore(cluster)
        assert checkpoint > 0 and restored_at >= joined_at, \
            f"scaling up did not restore from a checkpoint ({checkpoint}, {restored_at})"

        left_at = time.time()
        cluster.remove_pod(pod.name, how)
        expected = -9 if how is Removal.SIGKILL else 143  # 143: the JVM's SIGTERM shutdown
        assert pod.taskmanager_exit == expected
        assert pod.sidecar_exit == 0, f"{pod.name}'s sidecar exited with {pod.sidecar_exit}"
        assert not pod.survivors(), f"{pod.name} left processes behind: {pod.survivors()}"
        cluster.wait_parallelism(SLOTS)
        wait_counting_at(cluster, SLOTS, left_at)
        checkpoint, restored_at = last_restore(cluster)
        assert checkpoint > 0 and restored_at >= left_at, \
            f"scaling down did not restore from a checkpoint ({checkpoint}, {restored_at})"
    finally:
        back_to_one_pod(cluster)
    out = check_counts(cluster)
    assert {a.parallelism for a in out.attempts if a.opened_at >= joined_at} == {2, 4}

