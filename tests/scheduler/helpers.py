"""Shared builders for scheduler tests (fake backend and clock from harness_pool.testing)."""

from __future__ import annotations

from pathlib import Path

from harness_pool.scheduler.config import CycleConfig, parse_cycle
from harness_pool.scheduler.runner import CycleRunner
from harness_pool.scheduler.store import FileStateStore
from harness_pool.testing.fake_backend import FakeBackend, FakeClock

DROP = object()
"""A value in an override: remove that key from the default document."""


def cycle(tmp: Path | None = None, **over: object) -> CycleConfig:
    doc: dict = {
        "name": "t",
        "backend": {"type": "flink-rest", "url": "http://fake"},
        "state": {"type": "file", "path": str((tmp or Path("/nonexistent")) / "state.json")},
        "savepoints": {"keep": 2, "retries": 2, "retry_backoff": "1s", "timeout": "60s"},
        "jobs": {"streaming": {"flink_name": "streaming", "python": "s.py"},
                 "bounded": {"flink_name": "bounded", "python": "b.py"}},
        "steps": [
            {"action": "suspend", "job": "streaming"},
            {"action": "start", "job": "bounded"},
            {"action": "wait", "job": "bounded", "timeout": "30s"},
            {"action": "resume", "job": "streaming"},
        ],
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {k: v for k, v in {**doc[key], **value}.items() if v is not DROP}
        else:
            doc[key] = value
    return parse_cycle(doc)


def runner(tmp: Path, backend: FakeBackend | None = None, clock: FakeClock | None = None,
           **over: object) -> CycleRunner:
    cfg = cycle(tmp, **over)
    return CycleRunner(cfg, backend or FakeBackend(), FileStateStore(cfg.state.path),
                       clock=clock or FakeClock(), kill_at="")


def with_streaming(backend: FakeBackend) -> FakeBackend:
    from harness_pool.scheduler.model import JobStatus
    from harness_pool.testing.fake_backend import FakeJob

    backend.jobs["s0"] = FakeJob("streaming", JobStatus.RUNNING, None, None)
    return backend
