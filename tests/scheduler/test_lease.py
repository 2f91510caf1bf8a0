"""The Lease with client-go's semantics: injected clocks (skewed wall clocks, different
monotonic origins and rates) against the fake API server with the real ``kubernetes``
client. Expiry is judged by time observed locally since the record last changed."""

from __future__ import annotations

import pytest
from kubernetes import client

from harness_pool.scheduler.leader import (
    LeaseElector,
    LeaseMove,
    Observed,
    decide_lease,
)
from harness_pool.testing.fake_kube import FakeKubeApi

DURATION, DEADLINE, RETRY = 15.0, 10.0, 2.0
REC_A = ("a", "t0", "t1", 15, 0)
REC_A2 = ("a", "t0", "t2", 15, 0)


@pytest.mark.parametrize(("before", "record", "now", "move", "changed_at"), [
    (None, None, 5.0, LeaseMove.CREATE, None),
    (None, ("me", "t0", "t1", 15, 0), 5.0, LeaseMove.RENEW, 5.0),
    (None, ("", "t0", "t1", 15, 1), 5.0, LeaseMove.TAKE, 5.0),
    (None, REC_A, 5.0, LeaseMove.WAIT, 5.0),  # first sight: wait a full duration
    (Observed(REC_A, 5.0), REC_A, 19.9, LeaseMove.WAIT, 5.0),
    (Observed(REC_A, 5.0), REC_A, 20.1, LeaseMove.TAKE, 5.0),
    (Observed(REC_A, 5.0), REC_A2, 30.0, LeaseMove.WAIT, 30.0),  # it changed: renewed
], ids=["none-create", "mine-renew", "released-take", "new-record-wait", "fresh-wait",
        "unchanged-past-duration-take", "changed-resets-timer"])
def test_decide_lease(before, record, now, move, changed_at):
    got, observed = decide_lease("me", before, record, now, DURATION)
    assert got is move
    assert (observed.changed_at if observed else None) == changed_at


class SkewedClock:
    """A replica's clocks: its own monotonic origin and rate, and a wall clock off by
    ``skew`` seconds from the shared real time."""

    def __init__(self, real: list[float], skew: float = 0.0, rate: float = 1.0,
                 origin: float = 0.0) -> None:
        self.real, self.skew, self.rate, self.origin = real, skew, rate, origin

    def monotonic(self) -> float:
        return self.origin + self.real[0] * self.rate

    def wall(self) -> float:
        return 1_800_000_000.0 + self.real[0] + self.skew


@pytest.fixture
def kube():
    with FakeKubeApi() as api:
        yield api


def elector(kube, who: str, clock: SkewedClock) -> LeaseElector:
    return LeaseElector(client.CoordinationV1Api(kube.api_client()), "default", "scheduler",
                        who, DURATION, DEADLINE, RETRY, clock=clock)


@pytest.mark.parametrize("skew", [3600.0, -3600.0, 0.0], ids=["b-ahead", "b-behind", "none"])
def test_skewed_replicas_never_both_lead(kube, skew):
    real = [0.0]
    a = elector(kube, "a", SkewedClock(real, origin=100.0))
    b = elector(kube, "b", SkewedClock(real, skew=skew, rate=1.05, origin=9_000.0))
    both, a_led, b_led = [], [], []
    a_stops = 31.0  # a's process freezes (a GC pause, a partition) after this
    while real[0] < 80.0:
        if real[0] < a_stops:
            a.tick()
        b.tick()
        for _ in range(4):  # look between ticks too
            if a.leading() and b.leading():
                both.append(real[0])
            a_led.append(a.leading())
            b_led.append(b.leading())
            real[0] = round(real[0] + RETRY / 4, 3)
    assert not both, f"both led at {both}"
    assert a_led[0] and not b_led[0], "a came first"
    assert not any(b_led[: int(a_stops * 2)]), "b took over while a was renewing"
    assert b_led[-1] and not a_led[-1], "b took over after a stopped renewing"
    assert kube.get_object("leases", "scheduler")["spec"]["holderIdentity"] == "b"


def test_the_holder_stops_leading_before_anyone_may_take_over(kube):
    real = [0.0]
    a = elector(kube, "a", SkewedClock(real))
    b = elector(kube, "b", SkewedClock(real))
    assert a.tick()
    assert not b.tick()  # b first sees the record at real 0
    real[0] = DEADLINE - 0.1
    assert a.leading(), "within renew_deadline of its last renewal"
    real[0] = DEADLINE + 0.1
    assert not a.leading(), "renew_deadline passed without a renewal: a stops acting"
    assert not b.tick(), "but b must wait lease_duration since it saw the last change"
    real[0] = DURATION + 0.1
    assert b.tick()


def test_at_most_one_write_per_retry_period(kube):
    real = [0.0]
    a = elector(kube, "a", SkewedClock(real))
    for _ in range(10):
        a.tick()
    assert a.writes == 1
    real[0] = RETRY
    a.tick()
    assert a.writes == 2


def test_a_deleted_lease_is_created_again(kube):
    real = [0.0]
    a = elector(kube, "a", SkewedClock(real))
    assert a.tick()
    kube.delete_object("leases", "scheduler")
    real[0] = RETRY
    assert a.tick()
    assert kube.get_object("leases", "scheduler")["spec"]["holderIdentity"] == "a"


def test_release_lets_a_successor_take_over_at_once(kube):
    real = [0.0]
    a = elector(kube, "a", SkewedClock(real))
    b = elector(kube, "b", SkewedClock(real))
    assert a.tick() and not b.tick()
    a.release()
    assert not a.leading()
    real[0] = 0.5
    assert b.tick(), "a released it: no need to wait for expiry"


class _Racing:
    """A CoordinationV1Api whose reads let a rival act between read and write."""

    def __init__(self, api, rival) -> None:
        self.api, self.rival = api, rival

    def read_namespaced_lease(self, *args, **kwargs):
        try:
            return self.api.read_namespaced_lease(*args, **kwargs)
        finally:
            self.rival()  # the rival writes after our read, before our write

    def __getattr__(self, name):
        return getattr(self.api, name)


@pytest.mark.parametrize("first", ["create", "takeover"])
def test_two_replicas_racing_for_the_lease_never_both_lead(kube, first):
    real = [0.0]
    api = client.CoordinationV1Api(kube.api_client())
    a = LeaseElector(api, "default", "scheduler", "a", clock=SkewedClock(real))
    if first == "takeover":
        old = LeaseElector(api, "default", "scheduler", "old", clock=SkewedClock(real))
        assert old.tick()
        old.release()
    results = {}
    b = LeaseElector(_Racing(api, lambda: results.setdefault("a", a.tick())), "default",
                     "scheduler", "b", clock=SkewedClock(real))
    results["b"] = b.tick()
    assert results == {"a": True, "b": False}, "the replica that wrote second must not lead"
    assert api.read_namespaced_lease("scheduler", "default").spec.holder_identity == "a"


def test_an_empty_precreated_lease_is_taken(kube):
    """k8s/scheduler/state.yaml creates the Lease with ``spec: {}``."""
    kube.put_object({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": "scheduler"}, "spec": {}})
    real = [0.0]
    assert elector(kube, "a", SkewedClock(real)).tick()
    assert kube.get_object("leases", "scheduler")["spec"]["holderIdentity"] == "a"
