"""gRPC health: readiness follows warm workers; a health-only port for probes."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness_pool.flink.local_cluster import free_port
from harness_pool.v1 import pool_pb2, pool_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _check(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_readiness_waits_for_a_warm_worker(sidecar_factory) -> None:
    sidecar = sidecar_factory(workers=1, warm=False)
    assert _check(sidecar.address, "liveness") == SERVING
    assert sidecar.wait_warm(timeout=90)
    assert _check(sidecar.address, "") == SERVING
    sidecar.stop()  # the factory's own stop is then a no-op


def test_health_port_serves_health_and_nothing_else(sidecar_factory) -> None:
    hport = free_port()
    sidecar = sidecar_factory(workers=1, health_port=hport, health_host="127.0.0.1")
    health = f"127.0.0.1:{hport}"
    assert _check(health, "") == SERVING
    assert _check(health, "liveness") == SERVING
    with grpc.insecure_channel(health) as channel:
        try:
            pool_pb2_grpc.PoolAdminStub(channel).GetStatus(pool_pb2.GetStatusRequest(), timeout=5)
        except grpc.RpcError as exc:
            assert exc.code() is grpc.StatusCode.UNIMPLEMENTED
        else:
            raise AssertionError("the health-only port served the admin API")
    sidecar.pool.drain()
    sidecar.health.shutting_down()
    assert _check(health, "") == NOT_SERVING
