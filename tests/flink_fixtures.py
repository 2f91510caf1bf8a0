"""Pytest plugin: one real local Flink session cluster per test session, started lazily.

``flink_cluster`` (session scope): 1 JobManager + 1 TaskManager, 4 slots,
process-mode Python. It starts the first time a test asks for it and stops at
the end of the session; when any test failed, its logs are copied to
``.test-artifacts/flink-cluster-<time>/``. Tests that use it should cancel
their jobs (``cluster.cancel_all()``) so the next test finds free slots.

``reactive_cluster`` (session scope, issue 13): an application cluster in
reactive mode running ``reactive_count.py`` on one pod (a TaskManager and its
own sidecar); tests add and remove pods and leave it with one.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / ".test-artifacts"


def _missing_prerequisite() -> str | None:
    if shutil.which("java") is None:
        return "no java on PATH"
    try:
        import pyflink  # noqa: F401
    except ImportError:
        return "apache-flink is not installed"
    return None


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[object]:
    """A started ``LocalFlinkCluster`` shared by the whole session."""
    reason = _missing_prerequisite()
    if reason:  # a missing prerequisite is a failure, never a silently skipped suite
        pytest.fail(f"the Flink tests need Java 17 and apache-flink: {reason} "
                    "(make test installs apache-flink; apt-get install openjdk-17-jre-headless)")
    from harness_pool.flink.local_cluster import LocalFlinkCluster

    cluster = LocalFlinkCluster(tmp_path_factory.mktemp("flink-cluster"), slots=4)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if request.session.testsfailed and cluster.log_dir.exists():
            target = ARTIFACTS / f"flink-cluster-{time.strftime('%Y%m%d-%H%M%S')}"
            shutil.copytree(cluster.log_dir, target, dirs_exist_ok=True)


# -- reactive mode (issue 13) ------------------------------------------------------------

REACTIVE_JOB = Path(__file__).resolve().parent.parent / "harness_pool" / "demo" / "jobs" / \
    "reactive_count.py"
#: Keys of the reactive job: enough that every keyed subtask of 4 gets some (a subtask
#: without keys never opens its Python function), few enough for state to stay tiny.
REACTIVE_KEYS = 64


@pytest.fixture(scope="session")
def reactive_cluster(tmp_path_factory: pytest.TempPathFactory,
                     request: pytest.FixtureRequest) -> Iterator[object]:
    """A started ``ReactiveCluster`` shared by the session: one pod (2 slots, its own
    sidecar, the fast boot) running ``reactive_count.py`` (20 records/s per source
    subtask, ``REACTIVE_KEYS`` keys) into ``cluster.workdir / "out"``.

    Tests that add pods must leave it as they found it: one pod, parallelism 2. On
    teardown every process is reaped (checked); when a test failed, the JobManager's,
    TaskManagers' and sidecars' logs are copied to ``.test-artifacts/reactive-<time>/``.
    """
    reason = _missing_prerequisite()
    if reason:
        pytest.fail(f"the Flink tests need Java 17 and apache-flink: {reason}")
    from harness_pool.flink.reactive import ReactiveCluster, ReactiveSettings

    workdir = tmp_path_factory.mktemp("reactive")
    cluster = ReactiveCluster(workdir, ReactiveSettings(
        job=REACTIVE_JOB, job_args=(str(workdir / "out"), "20", str(REACTIVE_KEYS))))
    try:
        cluster.start(pods=1)
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            if request.session.testsfailed:
                cluster.collect_logs(ARTIFACTS / f"reactive-{time.strftime('%Y%m%d-%H%M%S')}")
        survivors = cluster.survivors()
        assert not survivors, f"processes of the reactive cluster left behind: {survivors}"
