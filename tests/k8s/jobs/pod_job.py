"""PyFlink job of the pod end-to-end test (tests/k8s/test_pod_e2e.py), run in the JobManager.

Usage: ``pod_job.py RECORDS SECONDS``: RECORDS integers at parallelism 4, a Python
map that takes about SECONDS per subtask in all and tags each record with whether
it ran in the harness-pool sidecar's filesystem (/opt/harness-pool exists only
there), then a keyed Python reduce. Prints ``RESULT {key: [count, all_in_sidecar]}``.
"""

import json
import os
import sys
import time

from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment


def main() -> None:
    records, seconds = int(sys.argv[1]), float(sys.argv[2])
    delay = seconds * 4 / records

    def tag(x):
        time.sleep(delay)
        return x % 4, 1, os.path.exists("/opt/harness-pool")

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(4)
    counted = (
        env.from_collection(list(range(records)), type_info=Types.INT())
        .map(tag, output_type=Types.TUPLE([Types.INT(), Types.INT(), Types.BOOLEAN()]))
        .key_by(lambda t: t[0], key_type=Types.INT())
        .reduce(lambda a, b: (a[0], a[1] + b[1], a[2] and b[2]))
    )
    final = {}
    with counted.execute_and_collect() as results:
        for key, count, in_sidecar in results:
            final[key] = [count, in_sidecar]
    print("RESULT " + json.dumps(final, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
