"""CPU-bound Python UDF across 4 slots: RECORDS records, each costing WORK loop steps.

Usage: ``cpu_udf.py RECORDS WORK``. The source is spread over 4 subtasks
(rebalance), so all four slots' Python workers burn CPU at once.
"""

from __future__ import annotations

import sys

from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.functions import MapFunction


class Burn(MapFunction):
    def __init__(self, work: int) -> None:
        self.work = work

    def map(self, value):
        acc = 0
        for i in range(self.work):
            acc = (acc + i * value) % 1000003
        return acc


def main() -> None:
    records, work = int(sys.argv[1]), int(sys.argv[2])
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(4)
    (env.from_collection(list(range(records)), type_info=Types.INT())
        .rebalance()
        .map(Burn(work), output_type=Types.INT())
        .filter(lambda x: x < 0))
    env.execute("harness-pool cpu udf")


if __name__ == "__main__":
    main()
