"""Shared test fixtures.

The Flink fixtures (one real local cluster per test session, started lazily)
live in ``tests/flink_fixtures.py``; the sidecar fixtures in ``tests/sidecar_fixtures.py``.
"""

pytest_plugins = ["tests.flink_fixtures", "tests.sidecar_fixtures"]
