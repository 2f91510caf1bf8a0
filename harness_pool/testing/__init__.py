"""In-tree fakes, one per I/O interface, with failure switches and call logs.

- ``fake_backend``: an in-memory ``JobBackend`` (Flink-like jobs and savepoints)
  and a ``FakeClock`` whose ``sleep`` only advances time.
- ``fake_kube``: an in-process HTTP server following the Kubernetes REST paths the
  official client uses (FlinkDeployment/FlinkSessionJob/FlinkStateSnapshot,
  ConfigMaps, Leases), with ``fake_operator``: a simulated Flink Kubernetes
  Operator (FlinkStateSnapshot resources, legacy status fields, 1.9).
- ``fake_ververica``: an in-process Ververica Platform Application Manager API.
- ``fault_proxy``: not a fake: a fault-injecting HTTP proxy to put in front of a
  real peer (the Flink REST API of a real local cluster).
"""
