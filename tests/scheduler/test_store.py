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
