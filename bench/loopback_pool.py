"""PyFlink's own loopback worker pool (``BeamFnLoopbackWorkerPoolServicer``) as a process.

Prints its address on stdout, then serves until SIGTERM. One process, one GIL:
every slot's SDK harness runs as a thread in here. Used by bench_flink.py as
the "loopback thread pool" alternative.
"""

from __future__ import annotations

import signal
import threading

from pyflink.fn_execution.beam.beam_worker_pool_service import BeamFnLoopbackWorkerPoolServicer


def main() -> None:
    address = BeamFnLoopbackWorkerPoolServicer().start()
    print(address, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()


if __name__ == "__main__":
    main()
