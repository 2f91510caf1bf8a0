"""PyFlink streaming job for reactive mode: keyed running counts that must survive rescales.

Usage: ``reactive_count.py OUT_DIR [RATE] [KEYS] [WORK]``

A ``NumberSequenceSource`` (unbounded for practical purposes) is throttled in
Python to about RATE records a second per source subtask, keyed by
``value % KEYS``, and counted in keyed state. The job sets no parallelism: in
reactive mode it runs on every slot there is. WORK (default 0) adds that many
rounds of CPU work per record, for load tests.

Output, designed so that every line can be checked on its own: each subtask
attempt appends to its own file ``OUT_DIR/counts-<pid>-<subtask>-<attempt>.csv``
a header ``#open,<unix time>,<pid>,<subtask>,<parallelism>,<attempt>,<keys>,<shift>``
and then ``key,count,value`` for every record, where ``count`` is the key's
count within the value's *bucket* (``value >> shift``, kept in ``MapState``).
A bucket lies inside one source split, whose reader emits values in order, so
the key's values reach the counter in order within a bucket, across rescales
and restores; with exactly-once state the count of value ``v`` is therefore
always ``(v - bucket start) // KEYS + 1``. A replay writes the same pairs
again; a lost or reset state writes a smaller count, a double count a larger.
"""

from __future__ import annotations

import os
import sys
import time

from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.number_seq import NumberSequenceSource
from pyflink.datastream.functions import KeyedProcessFunction, MapFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

END = 2**62 - 1  # effectively unbounded; 2**62 values split evenly for any 2**n splits
SHIFT = 40  # buckets of 2**40 values: each inside one split for up to 2**22 splits


class Throttle(MapFunction):
    def __init__(self, rate: float, keys: int, work: int) -> None:
        self.delay = 1.0 / rate if rate > 0 else 0.0
        self.keys = keys
        self.work = work

    def map(self, value):
        if self.delay:
            time.sleep(self.delay)
        acc = 0
        for i in range(self.work):
            acc = (acc * 31 + i) % 1_000_003
        return f"k{value % self.keys}", int(value)


class Count(KeyedProcessFunction):
    def __init__(self, out_dir: str, keys: int) -> None:
        self.out_dir = out_dir
        self.keys = keys

    def open(self, runtime_context: RuntimeContext) -> None:
        self.counts = runtime_context.get_map_state(
            MapStateDescriptor("counts", Types.LONG(), Types.LONG()))
        subtask = runtime_context.get_index_of_this_subtask()
        attempt = runtime_context.get_attempt_number()
        parallelism = runtime_context.get_number_of_parallel_subtasks()
        pid = os.getpid()
        name = f"counts-{pid}-{subtask}-{attempt}.csv"
        self.out = open(os.path.join(self.out_dir, name), "a", buffering=1)
        self.out.write(f"#open,{time.time():.3f},{pid},{subtask},{parallelism},{attempt},"
                       f"{self.keys},{SHIFT}\n")

    def process_element(self, value, ctx):
        bucket = value[1] >> SHIFT
        count = (self.counts.get(bucket) or 0) + 1
        self.counts.put(bucket, count)
        self.out.write(f"{value[0]},{count},{value[1]}\n")
        yield value[0], count

    def close(self) -> None:
        self.out.close()


def main() -> None:
    out_dir = sys.argv[1]
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    keys = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    work = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    os.makedirs(out_dir, exist_ok=True)
    config = Configuration()
    # Small bundles: the Java side waits for each bundle before sending more, so the
    # Python throttle holds the unthrottled NumberSequenceSource back (backpressure)
    # and every record reaches the counts within a fraction of a second.
    config.set_string("python.fn-execution.bundle.size", "5")
    config.set_string("python.fn-execution.bundle.time", "100")
    env = StreamExecutionEnvironment.get_execution_environment(config)
    pairs = Types.TUPLE([Types.STRING(), Types.LONG()])
    (env.from_source(NumberSequenceSource(0, END), WatermarkStrategy.no_watermarks(), "numbers")
        .map(Throttle(rate, keys, work), output_type=pairs)
        .key_by(lambda r: r[0], key_type=Types.STRING())
        .process(Count(out_dir, keys), output_type=pairs)
        .filter(lambda r: r[1] < 0))  # keeps nothing: the files are the output
    env.execute("harness-pool reactive count")


if __name__ == "__main__":
    main()
