"""Fixtures shared by the scheduler tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``cli.main`` configures the root logger; give pytest its handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def cluster(flink_cluster):
    """The session's real Flink cluster with no job running before or after the test."""
    flink_cluster.cancel_all()
    yield flink_cluster
    flink_cluster.cancel_all()
