"""Bounded example job: counts words of a small fixed input, then FINISHES.

Usage: ``bounded_job.py OUT_FILE [N]``. Writes ``word,count`` lines to OUT_FILE
(one writer, parallelism 1) and ends; with ``N`` > 0 it processes ``N``
numbers instead of the word list (to make the job take longer).
"""

from __future__ import annotations

import sys
from typing import Any

from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.functions import MapFunction, RuntimeContext


class WriteLine(MapFunction):
    def __init__(self, path: str) -> None:
        self.path = path
        self.out: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self.out = open(self.path, "a")

    def map(self, value):
        self.out.write(f"{value[0]},{value[1]}\n")
        self.out.flush()
        return value

    def close(self) -> None:
        if self.out:
            self.out.close()


def main() -> None:
    out_file = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    words = [str(i % 7) for i in range(n)] if n else "a b c a b a".split()
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    (
        env.from_collection(words, type_info=Types.STRING())
        .map(lambda w: (w, 1), output_type=Types.TUPLE([Types.STRING(), Types.INT()]))
        .key_by(lambda t: t[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .map(WriteLine(out_file), output_type=Types.TUPLE([Types.STRING(), Types.INT()]))
    )
    env.execute("bounded-words")


if __name__ == "__main__":
    main()
