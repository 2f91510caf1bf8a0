"""File state store: atomic replace; a failed write never corrupts the old state."""

from __future__ import annotations

import os

import pytest

from harness_pool._errors import PermanentError
from harness_pool.scheduler.model import CycleState, CycleStatus, SavepointRecord
from harness_pool.scheduler.store import FileStateStore


def test_round_trip(tmp_path):
    store = FileStateStore(tmp_path / "s.json")
    assert store.load() is None
    state = CycleState(status=CycleStatus.RUNNING, cycle_id="c1", jobs={"a": "1"},
                       history=[SavepointRecord("a", "file:/sp", 1.0, "c1")])
    store.save(state)
    assert store.load() == state
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"], "no temporary files left"


def test_failed_rename_keeps_old_state_and_no_temp_file(tmp_path, monkeypatch):
    store = FileStateStore(tmp_path / "s.json")
    store.save(CycleState(cycle_id="old"))

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(PermanentError, match=r"cannot write state file .*s.json: No space"):
        store.save(CycleState(cycle_id="new"))
    monkeypatch.undo()
    assert store.load().cycle_id == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_unwritable_location_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    store = FileStateStore(tmp_path / "file" / "s.json")
    with pytest.raises(PermanentError, match="cannot write state file"):
        store.save(CycleState())


def test_foreign_file_is_refused_not_overwritten(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(PermanentError, match="not a scheduler state"):
        FileStateStore(path).load()
    assert path.read_text() == '{"hello": 1}'


# -- the request inbox and the ConfigMap store --------------------------------------------


def test_file_inbox_keeps_requests_out_of_the_state_document(tmp_path):
    from harness_pool.scheduler.model import Request, RequestKind

    store = FileStateStore(tmp_path / "s.json")
    store.save(CycleState(cycle_id="c1"))
    store.submit(Request("r1", RequestKind.SAVEPOINT, job="a", submitted_at=1.0))
    store.submit(Request("r2", RequestKind.DISPOSE, path="file:/sp", submitted_at=2.0))
    (tmp_path / "s.json.requests" / "junk.json").write_text("{not json")
    assert [r.id for r in store.inbox()] == ["r1", "r2"], "a garbled file is skipped"
    assert store.load().cycle_id == "c1" and not store.load().requests
    store.consume(["r1"])
    assert [r.id for r in store.inbox()] == ["r2"]


@pytest.fixture
def cm_api():
    from kubernetes import client

    from harness_pool.testing.fake_kube import FakeKubeApi

    with FakeKubeApi() as kube:
        yield kube, client.CoreV1Api(kube.api_client())


def test_configmap_store_round_trip_and_a_second_writer_is_refused(cm_api):
    from harness_pool.scheduler.store import ConfigMapStateStore

    _, api = cm_api
    store = ConfigMapStateStore(api, "default", "cycle-state")
    assert store.load() is None
    store.save(CycleState(cycle_id="c1"))
    store.save(CycleState(cycle_id="c2"))
    assert ConfigMapStateStore(api, "default", "cycle-state").load().cycle_id == "c2"
    stale = ConfigMapStateStore(api, "default", "cycle-state")
    stale.load()
    store.save(CycleState(cycle_id="c3"))
    with pytest.raises(PermanentError, match="another writer changed the scheduler state"):
        stale.save(CycleState(cycle_id="lost"))
    assert ConfigMapStateStore(api, "default", "cycle-state").load().cycle_id == "c3"


def test_configmap_request_arriving_mid_cycle_is_not_lost_and_loses_nothing(cm_api):
    from harness_pool.scheduler.model import Request, RequestKind
    from harness_pool.scheduler.store import ConfigMapStateStore

    kube, api = cm_api
    actor = ConfigMapStateStore(api, "default", "cycle-state")
    actor.load()
    actor.save(CycleState(cycle_id="c1"))
    cli = ConfigMapStateStore(api, "default", "cycle-state")
    cli.submit(Request("r1", RequestKind.SAVEPOINT, job="a"))  # bumps resourceVersion
    actor.save(CycleState(cycle_id="c1", step_index=1))  # 409, re-read, retried: no exit
    assert ConfigMapStateStore(api, "default", "cycle-state").load().step_index == 1
    assert [r.id for r in actor.inbox()] == ["r1"], "the request survived the state write"
    actor.consume(["r1"])
    actor.save(CycleState(cycle_id="c1", step_index=2))
    data = kube.get_object("configmaps", "cycle-state")["data"]
    assert sorted(data) == ["state.json"], "consumed requests leave the ConfigMap"


def test_a_state_written_before_plans_and_requests_still_loads_and_resumes(tmp_path):
    """The document the previous release wrote (no plan, no requests, no kinds)."""
    import json

    from harness_pool.scheduler.model import Phase

    old = {"status": "RUNNING", "cycle_id": "t-1", "cycle_started": 1.0, "step_index": 1,
           "phase": "SUBMITTING", "step_started": 1.0, "deadline": 99.0, "attempt": 0,
           "polls": 0, "trigger_id": "", "pending_job_id": "b1", "parallelism": None,
           "jobs": {}, "taken": {"streaming": "file:/sp/1"}, "stopped_at": {},
           "downtime": {}, "recovery": [], "failure": "", "last_error": "",
           "history": [{"job": "streaming", "path": "file:/sp/1", "taken_at": 1.0,
                        "cycle_id": "t-1", "status": "COMPLETED"}],
           "cycles": [{"cycle_id": "t-0", "started_at": 0.0, "ended_at": 0.5, "ok": True,
                       "failure": "", "downtime": {}}],
           "savepoint_failures": 0}
    (tmp_path / "s.json").write_text(json.dumps(old))
    state = FileStateStore(tmp_path / "s.json").load()
    assert state.phase is Phase.SUBMITTING and state.plan is None and not state.requests
    assert state.last_scheduled().cycle_id == "t-0"
