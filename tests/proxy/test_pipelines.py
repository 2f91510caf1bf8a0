"""Real Beam pipelines through the fixed-endpoint proxy, served by unmodified harnesses.

The harnesses are started as Beam's container boot starts them (``fake_boot.py``:
GetProvisionInfo on the sidecar with ``--id``, then ``sdk_worker_main``) and kept
running by a boot loop, as a container restart policy would. The sidecar runs
with ``--workers 0``: only the external ids can serve, so a passing pipeline went
through the proxy. Each test also checks the id's served count and forwarded bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from harness_pool.sidecar.server import Sidecar
from tests import shapes
from tests.proxy.boots import BootLoop
from tests.proxy.helpers import (
    Rendezvous,
    externals,
    served,
    start_beam_boots,
    wait_waiting,
)
from tests.sidecar.beam_helpers import RUNNERS, run

IDS = ("sdk-1", "sdk-2")


@pytest.fixture
def proxied(sidecar_factory: Callable[..., Sidecar],
            boots: Callable[[list[str]], BootLoop]) -> Sidecar:
    sidecar = sidecar_factory(workers=0, external_worker_ids=IDS, warm=False)
    start_beam_boots(sidecar, boots, *IDS)
    return sidecar


def assert_through_proxy(sidecar: Sidecar, before: dict[str, int], stages: int = 1) -> None:
    after = served(sidecar)
    assert sum(after.values()) - sum(before.values()) >= stages, (before, after)
    assert all(w.bytes_forwarded > 0 for k, w in externals(sidecar).items()
               if after[k] > before[k])


@pytest.mark.parametrize("runner", RUNNERS)
def test_multi_stage_group_by_key_side_input(proxied: Sidecar, runner: str) -> None:
    before = served(proxied)
    run(proxied.address, shapes.word_count, runner)
    assert_through_proxy(proxied, before)


@pytest.mark.parametrize("runner", RUNNERS)
def test_user_state_and_timers(proxied: Sidecar, runner: str) -> None:
    before = served(proxied)
    run(proxied.address, shapes.state_and_timers, runner)
    assert_through_proxy(proxied, before)


def test_state_channel_with_a_different_worker_id_is_routed_by_instruction(
        sidecar_factory: Callable[..., Sidecar], boots: Callable[[list[str]], BootLoop]) -> None:
    """WORKER_ID (the state channel's only source of its header) names nobody we know."""
    sidecar = sidecar_factory(workers=0, external_worker_ids=IDS, warm=False)
    start_beam_boots(sidecar, boots, "sdk-1", extra=("--state-worker-id", "container-7"))

    def build(p: beam.Pipeline) -> None:
        out = (p | beam.Create([("a", 3), ("b", 1), ("a", 1)])
               | beam.ParDo(shapes.BufferUntilTimer()))
        assert_that(out, equal_to([("a", [1, 3], 2), ("b", [1], 1)]))

    run(sidecar.address, build)
    assert served(sidecar)["sdk-1"] == 1
    assert sidecar.metrics.forwarded.labels("state")._value.get() > 0


def test_large_elements(proxied: Sidecar) -> None:
    before = served(proxied)
    run(proxied.address, shapes.large_elements)
    assert_through_proxy(proxied, before)
    assert proxied.metrics.forwarded.labels("data")._value.get() > 3 * shapes.LARGE


@pytest.mark.parametrize("runner", RUNNERS)
def test_splittable_dofn(proxied: Sidecar, runner: str) -> None:
    before = served(proxied)
    run(proxied.address, shapes.splittable, runner)
    assert_through_proxy(proxied, before)


def test_harnesses_started_before_the_runner_are_held_then_served(
        sidecar_factory: Callable[..., Sidecar], boots: Callable[[list[str]], BootLoop]) -> None:
    sidecar = sidecar_factory(workers=0, external_worker_ids=IDS, warm=False,
                              provision_hold_timeout=60)
    assert not sidecar.status().serving
    loops = start_beam_boots(sidecar, boots, *IDS)
    wait_waiting(sidecar, *IDS)
    assert sidecar.status().serving
    # The boots stay blocked in GetProvisionInfo for a few seconds: nothing exits.
    for loop in loops:
        with pytest.raises(Exception, match="timed out"):
            loop.current.wait(timeout=2)  # type: ignore[union-attr]
        assert loop.exits == []
    run(sidecar.address, shapes.word_count)
    assert sum(served(sidecar).values()) == 1


def test_two_concurrent_jobs_on_two_external_workers_stay_apart(
        proxied: Sidecar, tmp_path: Path) -> None:
    wait_waiting(proxied, *IDS)
    errors: list[BaseException] = []

    def job(name: str, other: str, values: list[int]) -> None:
        def build(p: beam.Pipeline) -> None:
            out = (p | beam.Create(values) | beam.ParDo(Rendezvous(str(tmp_path), name, other))
                   | beam.Map(lambda v, tag=name: (tag, v)))
            assert_that(out, equal_to([(name, v) for v in values]))

        try:
            run(proxied.address, build)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=job, args=("a", "b", [1, 2, 3])),
               threading.Thread(target=job, args=("b", "a", [10, 20]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert served(proxied) == {"sdk-1": 1, "sdk-2": 1}
