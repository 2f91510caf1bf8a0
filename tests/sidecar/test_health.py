"""gRPC health: readiness follows warm workers; a health-only port for probes."""

from __future__ import annotations

import time

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


def test_a_watch_that_never_reads_blocks_neither_check_nor_readiness_updates(
        sidecar_factory) -> None:
    """HTTP/2 window kept at 0 by Watch clients, on the main and the health-only port."""
    import threading

    from tests.sidecar.h2_raw import StalledCall

    hport = free_port()
    sidecar = sidecar_factory(workers=1, health_port=hport, health_host="127.0.0.1")
    health = f"127.0.0.1:{hport}"
    stalled = [StalledCall(addr, "/grpc.health.v1.Health/Watch")
               for addr in (sidecar.address, health) * 4]
    try:
        for address in (sidecar.address, health):
            assert _check(address, "") == SERVING
            assert _check(address, "liveness") == SERVING
        # The pool's own readiness update goes through while the watchers are stuck.
        update = threading.Thread(target=lambda: (sidecar.pool.drain(),
                                                  sidecar.health.refresh()), daemon=True)
        update.start()
        update.join(10)
        assert not update.is_alive(), "a readiness update blocked behind a stalled Watch"
        assert _check(health, "") == NOT_SERVING
    finally:
        for call in stalled:
            call.close()


def test_readiness_is_computed_and_set_under_one_lock() -> None:
    """Two refreshes racing: the one that computed first must not set last."""
    import threading

    from harness_pool._grpc import Watchdog
    from harness_pool.sidecar.health import HealthServicer, Readiness

    state = {"ready": False}
    first_call = threading.Event()
    gate = threading.Event()

    def can_serve() -> bool:
        value = state["ready"]
        if not first_call.is_set():
            first_call.set()
            gate.wait(10)  # the first refresh computed False, then stalls before setting
        return value

    watchdog = Watchdog()
    servicer = HealthServicer(watchdog, lambda: True)
    readiness = Readiness(servicer, can_serve)
    try:
        slow = threading.Thread(target=readiness.refresh)
        slow.start()
        assert first_call.wait(10)
        state["ready"] = True  # a worker became idle: a second refresh follows
        fast = threading.Thread(target=readiness.refresh)
        fast.start()
        fast.join(0.5)  # with one lock it waits for the slow one; without, it sets SERVING now
        gate.set()
        slow.join(10)
        fast.join(10)
        assert servicer.status("") == SERVING, "stale NOT_SERVING although a worker is idle"
    finally:
        gate.set()
        watchdog.stop()


def test_liveness_fails_when_the_supervisor_loop_is_wedged(sidecar_factory) -> None:
    sidecar = sidecar_factory(workers=1, liveness_timeout=1.0)
    assert _check(sidecar.address, "liveness") == SERVING
    pool_lock = sidecar.pool._cond
    with pool_lock:  # a thread stuck holding the pool's lock wedges the supervisor loop
        deadline = time.monotonic() + 30
        while _check(sidecar.address, "liveness") == SERVING:
            assert time.monotonic() < deadline, "liveness stayed SERVING with a wedged pool"
            time.sleep(0.2)
    deadline = time.monotonic() + 30
    while _check(sidecar.address, "liveness") != SERVING:
        assert time.monotonic() < deadline, "liveness did not come back"
        time.sleep(0.2)
