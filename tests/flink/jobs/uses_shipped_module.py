"""Reports, from inside the Python workers, whether ``hp_shipped_mod`` is importable.

Usage: ``uses_shipped_module.py OUT_DIR``; writes ``OUT_DIR/probe-<pid>.txt``
with ``present:<VALUE>`` or ``absent``. Ship the module with ``-pyfs`` to make
it present.
"""

from __future__ import annotations

import os
import sys

from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.functions import MapFunction


class Probe(MapFunction):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def map(self, value):
        try:
            import hp_shipped_mod

            seen = f"present:{hp_shipped_mod.VALUE}"
        except ImportError:
            seen = "absent"
        with open(os.path.join(self.out_dir, f"probe-{os.getpid()}.txt"), "w") as f:
            f.write(seen)
        return value


def main() -> None:
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    env.from_collection([1, 2, 3], type_info=Types.INT()).map(
        Probe(out_dir), output_type=Types.INT())
    env.execute("harness-pool shipped module probe")


if __name__ == "__main__":
    main()
