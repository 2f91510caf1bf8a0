"""Shared test fixtures, one plugin module per area:

- ``tests/sidecar_fixtures.py``: a real sidecar on a free port (``sidecar_factory``);
- ``tests/flink_fixtures.py``: one real local Flink cluster per session (``flink_cluster``),
  and a reactive application cluster with pods (``reactive_cluster``);
- ``tests/flink_pool_fixtures.py``: a Flink cluster whose TaskManager is served by the
  pool (``pool_on_flink``).
"""

pytest_plugins = ["tests.sidecar_fixtures", "tests.flink_fixtures", "tests.flink_pool_fixtures"]
