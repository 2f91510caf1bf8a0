"""Fixed-endpoint mode: unmodified SDK harnesses connect to the sidecar's one
address and are forwarded, by their ``worker_id`` header, to the stage the
runner assigned them (see docs/fixed-endpoint.md).

Layers: ``core`` (pure: states, assignment, routing rule) and ``rewrite``
(pure: endpoints inside ProvisionInfo and ProcessBundleDescriptors) below
``workers`` (the shell the sidecar talks to), ``dispatch`` (StartWorker's
side) and ``services`` (gRPC servicers). Nothing here imports the sidecar:
the sidecar builds ``ProxySettings`` and registers ``services.handlers``.
"""

from harness_pool.proxy.dispatch import ExternalDispatcher
from harness_pool.proxy.services import handlers
from harness_pool.proxy.workers import ExternalWorkers, ProxySettings

__all__ = ["ExternalDispatcher", "ExternalWorkers", "ProxySettings", "handlers"]
