"""Fixed-endpoint mode: unmodified SDK harnesses connect to the sidecar's one
address and are forwarded, by their ``worker_id`` header, to the stage the
runner assigned them (see docs/fixed-endpoint.md).

Layers: ``core`` (pure: states, assignment, routing rule) and ``rewrite``
(pure: endpoints inside ProvisionInfo and ProcessBundleDescriptors) below
``workers`` (the shell the sidecar talks to) and ``services`` (gRPC servicers).
"""

from harness_pool.proxy.workers import ExternalWorkers

__all__ = ["ExternalWorkers"]
