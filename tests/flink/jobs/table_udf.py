"""PyFlink Table API job with a Python scalar UDF, writing CSV to OUT_DIR."""

from __future__ import annotations

import sys

from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment
from pyflink.table.udf import udf


@udf(result_type=DataTypes.STRING())
def shout(word: str) -> str:
    import os

    return f"{word.upper()}!:{os.getpid()}"


def main() -> None:
    out_dir = sys.argv[1]
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("parallelism.default", "2")
    t_env.create_temporary_function("shout", shout)
    t_env.execute_sql(f"""
        CREATE TABLE sink (word STRING, loud STRING) WITH (
          'connector' = 'filesystem', 'path' = '{out_dir}', 'format' = 'csv')""")
    source = t_env.from_elements([(w,) for w in ["alpha", "beta", "gamma", "delta"]], ["word"])
    source.select(source.word, shout(source.word)).execute_insert("sink").wait()


if __name__ == "__main__":
    main()
