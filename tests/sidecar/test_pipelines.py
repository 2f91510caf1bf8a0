"""Real Beam pipelines through the sidecar, on both of Beam's portable Python runners.

Each test checks that its stages really went through StartWorker on the
sidecar (the assignment history grew and every stage finished), not just that
the pipeline produced the right answer, since a runner could silently fall
back to running the SDK in-process.
"""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.coders import StrUtf8Coder
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from harness_pool.sidecar.server import Sidecar
from tests import shapes
from tests.sidecar.beam_helpers import RUNNERS, pipeline, run


def served(sidecar: Sidecar) -> list[str]:
    return [a.outcome for a in sidecar.status().assignments]


def assert_went_through(sidecar: Sidecar, before: int) -> None:
    history = sidecar.status().assignments
    assert len(history) > before, "no StartWorker reached the sidecar"
    for record in history[: len(history) - before]:
        assert record.outcome in ("finished", "stopped", "running"), record
        assert record.time_to_ready_seconds > 0


@pytest.mark.parametrize("runner", RUNNERS)
def test_word_count_with_side_input_and_group_by_key(sidecar: Sidecar, runner: str) -> None:
    before = len(served(sidecar))
    run(sidecar.address, shapes.word_count, runner)
    assert_went_through(sidecar, before)


@pytest.mark.parametrize("runner", RUNNERS)
def test_user_state_and_timers(sidecar: Sidecar, runner: str) -> None:
    before = len(served(sidecar))
    run(sidecar.address, shapes.state_and_timers, runner)
    assert_went_through(sidecar, before)


def test_large_elements(sidecar: Sidecar) -> None:
    before = len(served(sidecar))
    run(sidecar.address, shapes.large_elements)
    assert_went_through(sidecar, before)


@pytest.mark.parametrize("runner", RUNNERS)
def test_splittable_dofn(sidecar: Sidecar, runner: str) -> None:
    before = len(served(sidecar))
    run(sidecar.address, shapes.splittable, runner)
    assert_went_through(sidecar, before)


def test_user_metrics_reach_the_runner(sidecar: Sidecar) -> None:
    class Counted(beam.DoFn):
        def __init__(self) -> None:
            self.words = Metrics.counter("harness_pool_test", "words")
            self.lengths = Metrics.distribution("harness_pool_test", "lengths")

        def process(self, word):
            self.words.inc()
            self.lengths.update(len(word))
            yield word

    with pipeline(sidecar.address) as p:
        _ = p | beam.Create(["one", "three", "seven"]) | beam.ParDo(Counted())
        result = p.run()
        result.wait_until_finish()
        query = result.metrics().query(MetricsFilter().with_namespace("harness_pool_test"))
        counters = {c.key.metric.name: c.committed for c in query["counters"]}
        dists = {d.key.metric.name: d.committed for d in query["distributions"]}
        assert counters == {"words": 3}
        assert (dists["lengths"].min, dists["lengths"].max, dists["lengths"].sum) == (3, 5, 13)
        p.run = lambda *a, **k: result  # the context manager's own run() reuses this result


def test_string_coder_round_trip_through_two_stages(sidecar: Sidecar) -> None:
    """A multi-stage pipeline with a Reshuffle: two executable stages, both served."""

    def build(p: beam.Pipeline) -> None:
        out = (p | beam.Create(["x", "y", "z"]).with_output_types(str)
               | beam.Reshuffle()
               | beam.Map(lambda s: s.upper()).with_output_types(str))
        assert_that(out, equal_to(["X", "Y", "Z"]))

    before = len(served(sidecar))
    run(sidecar.address, build)
    assert_went_through(sidecar, before)
    assert StrUtf8Coder().decode(StrUtf8Coder().encode("x")) == "x"
