"""Fixtures of the dependency tests: packages built once per session, a cache per test."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness_pool.deps import EnvCache, WorkerFacts
from tests.deps.helpers import build_sdist, make_sdist, make_wheel


@dataclasses.dataclass(frozen=True)
class Packages:
    """Real distributions built offline with the venv's setuptools."""

    mypkg: Path  # sdist mypkg 0.1, needs six (which the worker has)
    tiny1: Path  # wheel tinypkg 1.0
    tiny2: Path  # wheel tinypkg 2.0
    reqpkg: Path  # wheel reqpkg 2.0, for requirements files
    needs_missing: Path  # wheel needing a distribution nobody staged
    broken: Path  # sdist whose setup.py fails
    fake_protobuf: Path  # wheel "protobuf" 4.25.3 (a version the worker does not run)
    workflow: Path  # sdist of a --setup_file project, as workflow.tar.gz would be


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    root = tmp_path_factory.mktemp("packages")
    return Packages(
        mypkg=build_sdist(root, "mypkg", "0.1", requires=("six",)),
        tiny1=make_wheel(root / "v1", "tinypkg", "1.0"),
        tiny2=make_wheel(root / "v2", "tinypkg", "2.0"),
        reqpkg=make_wheel(root / "wheels", "reqpkg", "2.0"),
        needs_missing=make_wheel(root / "wheels", "needy", "1.0", requires=("nosuchdep==9.9",)),
        broken=make_sdist(root / "broken", "broken", "1.0",
                          "raise SystemExit('broken-1.0: this setup.py refuses to build')\n"),
        fake_protobuf=make_wheel(root / "wheels", "protobuf", "4.25.3"),
        workflow=make_sdist(root / "workflow", "wfpkg", "1.0",
                            "from setuptools import setup\n"
                            "setup(name='wfpkg', version='1.0', packages=['wfpkg'])\n"),
    )


@pytest.fixture(scope="session")
def facts() -> WorkerFacts:
    return WorkerFacts.detect()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[EnvCache]:
    yield EnvCache(tmp_path / "cache", max_bytes=1 << 30)
