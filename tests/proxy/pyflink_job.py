"""A small PyFlink DataStream job whose Python workers come from a harness-pool sidecar.

``python pyflink_job.py HOST:PORT`` runs the job on a local MiniCluster with
``python.loopback-server.address`` set to the sidecar, so every Python operator's
boot calls StartWorker on the sidecar (as a TaskManager with
PYTHON_LOOPBACK_SERVER_ADDRESS does), and prints the sorted results as one line
of JSON.
"""

from __future__ import annotations

import json
import os
import sys


def main(address: str) -> None:
    # Do not let PyFlink start its own in-process loopback pool.
    os.environ["_python_worker_execution_mode"] = "process"
    from pyflink.common import Configuration, Types
    from pyflink.datastream import StreamExecutionEnvironment

    config = Configuration()
    config.set_string("python.loopback-server.address", address)
    config.set_string("python.executable", sys.executable)
    config.set_string("python.client.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(1)
    words = env.from_collection(["a b", "b c", "c c"], type_info=Types.STRING())
    counts = (words.flat_map(lambda line: [(w, 1) for w in line.split()],
                             output_type=Types.TUPLE([Types.STRING(), Types.INT()]))
              .key_by(lambda kv: kv[0], key_type=Types.STRING())
              .reduce(lambda a, b: (a[0], a[1] + b[1])))
    with counts.execute_and_collect() as results:
        out = sorted(tuple(r) for r in results)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
