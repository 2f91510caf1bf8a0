"""harness-pool: warm, isolated Beam SDK workers for Flink TaskManagers, and
savepoint-safe job cycles on Flink.

Layout (one concept per package):

- ``sidecar``: the gRPC server on the TaskManager pod's fixed address
  (StartWorker/StopWorker, worker registry, status, health).
- ``pool``: pooled SDK worker processes: the pure assignment core, the
  process supervisor and the worker agent that runs Beam's SDK harness.
- ``proxy``: fixed-endpoint mode, Fn API forwarding by ``worker_id`` header.
- ``flink``: a real local Flink session cluster from the ``apache-flink`` package.
- ``scheduler``: job cycles and savepoints on Flink backends.
- ``v1``: generated modules of the project's own gRPC API (``protos/``).
"""

__version__ = "0.1.0"
