"""PyFlink DataStream job: keyed running counts in ValueState, at parallelism 4.

Usage: ``keyed_count.py OUT_DIR [RECORDS] [RATE]``; with RATE, the source is
throttled to about RATE records a second so that a test can act mid-job.
Each Python worker appends every count update as ``key,count`` to
``OUT_DIR/result-<pid>.csv`` (the final count is the maximum per key), after a
``#pid,<pid>,<leaked>`` line that tells which process served the subtask.
It also sets a module-level global and reports whether it was already set
(it must never be: no process serves two jobs).
"""

from __future__ import annotations

import os
import sys
import time

from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.functions import KeyedProcessFunction, MapFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

_SEEN_BY_THIS_PROCESS = None


class Count(KeyedProcessFunction):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def open(self, runtime_context: RuntimeContext) -> None:
        global _SEEN_BY_THIS_PROCESS
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))
        job = os.environ.get("HP_TEST_JOB", "?")
        leaked = _SEEN_BY_THIS_PROCESS
        _SEEN_BY_THIS_PROCESS = job
        self.out = open(os.path.join(self.out_dir, f"result-{os.getpid()}.csv"), "a")
        self.out.write(f"#pid,{os.getpid()},{leaked}\n")
        print(f"harness-pool test worker pid {os.getpid()} opened subtask")

    def process_element(self, value, ctx):
        count = (self.count.value() or 0) + 1
        self.count.update(count)
        self.out.write(f"{value[0]},{count}\n")
        yield value[0], count

    def close(self) -> None:
        self.out.close()


class Throttle(MapFunction):
    def __init__(self, rate: float) -> None:
        self.delay = 1.0 / rate

    def map(self, value):
        time.sleep(self.delay)
        return value


def main() -> None:
    out_dir = sys.argv[1]
    records = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    os.makedirs(out_dir, exist_ok=True)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(4)
    tuples = Types.TUPLE([Types.STRING(), Types.INT()])
    ds = env.from_collection([(f"k{i % 10}", i) for i in range(records)], type_info=tuples)
    if rate:
        ds = ds.map(Throttle(rate), output_type=tuples)
    (ds.key_by(lambda r: r[0], key_type=Types.STRING())
       .process(Count(out_dir), output_type=Types.TUPLE([Types.STRING(), Types.LONG()]))
       .filter(lambda r: r[1] % 1000 == 0))
    env.execute("harness-pool keyed count")


if __name__ == "__main__":
    main()
