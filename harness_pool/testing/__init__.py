"""In-tree fakes, one per I/O interface, with failure switches and call logs.

- ``fake_backend``: an in-memory ``JobBackend`` (Flink-like jobs and savepoints)
  and a ``FakeClock`` whose ``sleep`` only advances time.
- ``fake_kube``: an in-process HTTP server following the Kubernetes REST paths the
  official client uses (FlinkDeployment/FlinkSessionJob, ConfigMaps, Leases) with
  a simulated Flink Kubernetes Operator.
- ``fake_ververica``: an in-process Ververica Platform REST server.
"""
