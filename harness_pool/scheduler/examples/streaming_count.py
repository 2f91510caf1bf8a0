"""Streaming example job: a keyed running count that survives savepoints.

Usage: ``streaming_count.py OUT_DIR [RATE_PER_SECOND]``

Reads an unbounded number sequence (its position is in every savepoint),
keys each number ``n`` by ``n % 4`` and keeps a running count per key in
keyed ``ValueState``. Every update is appended as ``key,count,n`` to
``OUT_DIR/counts-<pid>.csv`` (flushed per line), so a test can check that after
a restore the counts continue from their values at the savepoint: for every
key, counts are 1, 2, 3, ... with no reset and no gap, and every ``n`` appears
exactly once.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.number_seq import NumberSequenceSource
from pyflink.datastream.functions import KeyedProcessFunction, MapFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor


class Throttle(MapFunction):
    """Slows the stream to about ``rate`` records a second, right after the source.

    It is chained to the source and runs with tiny bundles, so a savepoint
    barrier never waits behind more than a few records.
    """

    def __init__(self, rate: float) -> None:
        self.delay = 1.0 / rate if rate > 0 else 0.0

    def map(self, value):
        if self.delay:
            time.sleep(self.delay)
        return value


class RunningCount(KeyedProcessFunction):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.count = None
        self.out: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))
        os.makedirs(self.out_dir, exist_ok=True)
        self.out = open(os.path.join(self.out_dir, f"counts-{os.getpid()}.csv"), "a")

    def process_element(self, value, ctx):
        count = (self.count.value() or 0) + 1
        self.count.update(count)
        self.out.write(f"{value % 4},{count},{value}\n")
        self.out.flush()
        yield value % 4, count

    def close(self) -> None:
        if self.out:
            self.out.close()


def main() -> None:
    out_dir = sys.argv[1]
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 50.0
    config = Configuration()
    config.set_string("python.fn-execution.bundle.size", "5")
    config.set_string("python.fn-execution.bundle.time", "100")
    # Parallelism comes from the submission (the scheduler's rescale step), default 1.
    env = StreamExecutionEnvironment.get_execution_environment(config)
    source = NumberSequenceSource(0, 2**62)
    numbers = env.from_source(source, WatermarkStrategy.no_watermarks(), "numbers").uid("numbers")
    (
        numbers.map(Throttle(rate), output_type=Types.LONG())
        .uid("throttle")
        .key_by(lambda n: n % 4, key_type=Types.LONG())
        .process(RunningCount(out_dir), output_type=Types.TUPLE([Types.LONG(), Types.LONG()]))
        .uid("running-count")
        .name("running-count")
    )
    env.execute("streaming-count")


if __name__ == "__main__":
    main()
