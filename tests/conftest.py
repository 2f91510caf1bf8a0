"""Shared test fixtures, one plugin module per area:

- ``tests/sidecar_fixtures.py``: a real sidecar on a free port (``sidecar_factory``);
- ``tests/flink_fixtures.py``: one real local Flink cluster per session (``flink_cluster``),
  and a reactive application cluster with pods (``reactive_cluster``);
- ``tests/flink_pool_fixtures.py``: a Flink cluster whose TaskManager is served by the
  pool (``pool_on_flink``).
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from harness_pool.deps.settings import CACHE_DIR_ENV

# Pooled workers start in a private directory, never the sidecar's working directory
# (harness_pool/pool/interpreters.py), so pipelines whose DoFns live in test modules
# need the repository importable, as a user's image has the pipeline package installed.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)

# Sidecars started by tests (in process or as `harness-pool serve`) keep their environment
# cache in one folder of this session, never in the host's /var/cache/harness-pool.
if not os.environ.get(CACHE_DIR_ENV):
    _CACHE = tempfile.mkdtemp(prefix="harness-pool-test-env-cache-")
    os.environ[CACHE_DIR_ENV] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, True)

pytest_plugins = ["tests.sidecar_fixtures", "tests.flink_fixtures", "tests.flink_pool_fixtures"]
