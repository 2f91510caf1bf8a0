"""Shared test fixtures.

The Flink fixtures (one real local cluster per test session, started lazily)
live in ``tests/flink_fixtures.py``; the sidecar fixtures in ``tests/sidecar_fixtures.py``.
"""

import importlib.util

# TODO(integration): plain list once tests/flink_fixtures.py has landed.
pytest_plugins = [
    name for name in ("tests.flink_fixtures", "tests.sidecar_fixtures", "tests.flink_pool_fixtures")
    if importlib.util.find_spec(name) is not None
]
