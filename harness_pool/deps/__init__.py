"""Job dependencies on warm workers: Beam artifacts staged, environments cached by content.

The public face is ``prepare`` (prepare.py) and the ``EnvCache`` it needs;
the modules below it, from the bottom up:

- ``errors``: the ``DependencyError`` family;
- ``manifest``, ``plan``, ``conflicts``: pure decisions (what the job staged,
  what to install and under which cache key, what clashes with the worker);
- ``runtime``: facts about the worker interpreter;
- ``locks``, ``blobs``, ``envcache``: the pod's cache on disk;
- ``artifacts``, ``staging``: the runner's artifact service and ``staged/``;
- ``installer``: pip into a layered virtual environment.

See docs/dependencies.md.
"""

from harness_pool.deps.envcache import CacheUsage, EnvCache, Outcome
from harness_pool.deps.errors import DependencyError
from harness_pool.deps.prepare import PreparedEnvironment, PrepareStats, WorkerFacts, prepare

__all__ = ["CacheUsage", "DependencyError", "EnvCache", "Outcome", "PreparedEnvironment",
           "PrepareStats", "WorkerFacts", "prepare"]
