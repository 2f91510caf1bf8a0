"""Reports, from inside the Python workers, which modules they can import and their Python.

Usage: ``probe_imports.py OUT_DIR MODULE...``; each worker writes
``OUT_DIR/probe-<pid>.json``: ``{"prefix": sys.prefix, "executable": ...,
"modules": {MODULE: VALUE or "absent"}}``.
"""

from __future__ import annotations

import json
import os
import sys

from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.functions import MapFunction


class Probe(MapFunction):
    def __init__(self, out_dir: str, modules: list[str]) -> None:
        self.out_dir = out_dir
        self.modules = modules

    def map(self, value):
        import importlib

        seen = {}
        for name in self.modules:
            try:
                seen[name] = str(importlib.import_module(name).VALUE)
            except ImportError:
                seen[name] = "absent"
        report = {"prefix": sys.prefix, "executable": sys.executable, "modules": seen}
        with open(os.path.join(self.out_dir, f"probe-{os.getpid()}.json"), "w") as f:
            json.dump(report, f)
        return value


def main() -> None:
    out_dir, modules = sys.argv[1], sys.argv[2:]
    os.makedirs(out_dir, exist_ok=True)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    env.from_collection([1, 2, 3], type_info=Types.INT()).map(
        Probe(out_dir, modules), output_type=Types.INT())
    env.execute("harness-pool import probe")


if __name__ == "__main__":
    main()
