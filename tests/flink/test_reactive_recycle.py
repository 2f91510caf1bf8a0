"""A sidecar whose TaskManager vanished recycles the workers that served it (issue 13).

In a TaskManager Deployment the pod outlives its TaskManager container: after an
OOM kill or a crash, Kubernetes restarts the TaskManager beside the *same* native
sidecar. The workers that served the dead TaskManager's stages have no runner any
more; the sidecar must end them and warm replacements, within a bound, so the
restarted TaskManager finds ``--workers`` warm workers again. Its status must say
why each stage ended, in a sentence.

The bound: ``RECYCLE_BOUND`` seconds from the TaskManager's SIGKILL. The runner's
end of every Fn API stream dies with the TaskManager (the kernel closes its sockets
at once), so the sidecar can know within a second or two; 30 s leaves room for a
loaded 2-core CI machine and is still far below anything a restarting TaskManager
would notice.

This file is kept apart from ``test_reactive.py`` on purpose: with the sidecar of
main at the time of writing, it fails (the worker serving one of the two stages
stays ``busy`` long after its TaskManager is gone, and a failed stage's detail is
a lone ``>`` from a traceback); the sidecar's side is issue 13's phase 2.
"""

from __future__ import annotations

import re
import time

import pytest

from harness_pool.flink.pod import Removal
from harness_pool.flink.reactive import ReactiveCluster
from tests.flink.reactive_steps import SLOTS, back_to_one_pod, sidecar_status
from tests.sidecar_fixtures import pid_alive

pytestmark = [pytest.mark.slow, pytest.mark.flink]

RECYCLE_BOUND = 30.0
_WORD = re.compile(r"[A-Za-z]{2,}")


def is_sentence(text: str) -> bool:
    """At least four words: a reader learns what happened, not a fragment of a traceback."""
    return len(_WORD.findall(text)) >= 4


@pytest.mark.parametrize(("text", "ok"), [
    (">", False), ("", False), ("Traceback (most", False),
    ("stage 1-1 ended: the TaskManager's control stream closed without StopWorker", True),
])
def test_sentence_check(text: str, ok: bool) -> None:
    assert is_sentence(text) is ok


def test_sidecar_recycles_workers_whose_taskmanager_vanished(
        reactive_cluster: ReactiveCluster) -> None:
    cluster = reactive_cluster
    cluster.wait_parallelism(SLOTS)
    pod = cluster.add_pod()
    problems: list[str] = []
    try:
        cluster.wait_parallelism(2 * SLOTS)
        before = sidecar_status(pod)
        serving = {w["pool_id"]: w for w in before["workers"]
                   if w["state"] in ("assigned", "busy")}
        assert len(serving) == SLOTS, f"{pod.name}'s sidecar serves: {before['workers']}"

        killed_at = time.monotonic()
        cluster.remove_pod(pod.name, Removal.SIGKILL, stop_sidecar=False)
        recycled_after = None
        status = before
        while time.monotonic() - killed_at < RECYCLE_BOUND:
            status = sidecar_status(pod)
            states = {w["pool_id"]: w["state"] for w in status["workers"]}
            idle = sum(1 for s in states.values() if s == "idle")
            if all(states.get(pid, "exited") == "exited" for pid in serving) and idle >= SLOTS:
                recycled_after = time.monotonic() - killed_at
                break
            time.sleep(0.5)
        if recycled_after is None:
            stuck = [(w["pool_id"], w["state"], w["runner_worker_id"], w["pid"],
                      pid_alive(w["pid"])) for w in status["workers"] if w["pool_id"] in serving
                     and w["state"] != "exited"]
            problems.append(
                f"{RECYCLE_BOUND:.0f} s after its TaskManager's SIGKILL, {pod.name}'s sidecar "
                f"still holds workers of the vanished TaskManager (pool id, state, runner id, "
                f"pid, alive): {stuck}; workers: "
                f"{[(w['pool_id'], w['state']) for w in status['workers']]}")
        ended = [a for a in status["assignments"] if a["pool_id"] in serving
                 and a["outcome"] not in ("running", "starting")]
        for record in ended:
            if not is_sentence(record["detail"]):
                problems.append(f"stage {record['runner_worker_id']} on {record['pool_id']} "
                                f"ended {record['outcome']} with detail "
                                f"{record['detail']!r}: not a sentence saying why")
    finally:
        pod.stop()
        back_to_one_pod(cluster)
    assert not problems, "\n".join(problems)
