"""Real Beam pipelines through the sidecar, on both of Beam's portable Python runners.

Each test checks that its stages really went through StartWorker on the
sidecar (the assignment history grew and every stage finished), not just that
the pipeline produced the right answer, since a runner could silently fall
back to running the SDK in-process.
"""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.coders import StrUtf8Coder, VarIntCoder
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.timeutil import TimeDomain

from harness_pool.sidecar.server import Sidecar
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

    def build(p: beam.Pipeline) -> None:
        stop = p | "stop" >> beam.Create(["the"])
        counts = (
            p
            | beam.Create(["the cat sat", "the dog sat", "a cat ran"])
            | beam.FlatMap(str.split)
            | beam.Filter(lambda w, stop: w not in stop, stop=beam.pvalue.AsList(stop))
            | beam.Map(lambda w: (w, 1))
            | beam.GroupByKey()
            | beam.MapTuple(lambda w, ones: (w, sum(ones)))
        )
        assert_that(counts, equal_to([("cat", 2), ("sat", 2), ("dog", 1), ("a", 1), ("ran", 1)]))

    run(sidecar.address, build, runner)
    assert_went_through(sidecar, before)


class _BufferUntilTimer(beam.DoFn):
    """Keyed bag state flushed by an event-time timer at the end of the window."""

    BUFFER = userstate.BagStateSpec("buffer", VarIntCoder())
    SEEN = userstate.CombiningValueStateSpec("seen", VarIntCoder(), beam.combiners.CountCombineFn())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)

    def process(self, element, buffer=beam.DoFn.StateParam(BUFFER),
                seen=beam.DoFn.StateParam(SEEN), flush=beam.DoFn.TimerParam(FLUSH)):
        _key, value = element
        buffer.add(value)
        seen.add(1)
        flush.set(beam.window.GlobalWindow().max_timestamp())

    @userstate.on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, buffer=beam.DoFn.StateParam(BUFFER),
                 seen=beam.DoFn.StateParam(SEEN)):
        yield key, sorted(buffer.read()), seen.read()


@pytest.mark.parametrize("runner", RUNNERS)
def test_user_state_and_timers(sidecar: Sidecar, runner: str) -> None:
    before = len(served(sidecar))

    def build(p: beam.Pipeline) -> None:
        out = (p | beam.Create([("a", 3), ("b", 1), ("a", 1), ("a", 2)])
               | beam.ParDo(_BufferUntilTimer()))
        assert_that(out, equal_to([("a", [1, 2, 3], 3), ("b", [1], 1)]))

    run(sidecar.address, build, runner)
    assert_went_through(sidecar, before)


def test_large_elements(sidecar: Sidecar) -> None:
    """Elements of several MB cross the data plane both ways and a shuffle."""
    size = 6 * 1024 * 1024
    before = len(served(sidecar))

    def build(p: beam.Pipeline) -> None:
        out = (
            p
            | beam.Create([0, 1, 2])
            | beam.Map(lambda i: (i % 2, chr(ord("a") + i) * size))
            | beam.GroupByKey()
            | beam.MapTuple(lambda k, vs: (k, sorted((len(v), v[0]) for v in vs)))
        )
        assert_that(out, equal_to([(0, [(size, "a"), (size, "c")]), (1, [(size, "b")])]))

    run(sidecar.address, build)
    assert_went_through(sidecar, before)


class _CountUpTo(RestrictionProvider):
    def initial_restriction(self, element):
        return OffsetRange(0, element)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return restriction.size()

    def split(self, element, restriction):
        return restriction.split(3)


class _EmitOffsets(beam.DoFn):
    def process(self, element, tracker=beam.DoFn.RestrictionParam(_CountUpTo())):
        position = tracker.current_restriction().start
        while tracker.try_claim(position):
            yield (element, position)
            position += 1


@pytest.mark.parametrize("runner", RUNNERS)
def test_splittable_dofn(sidecar: Sidecar, runner: str) -> None:
    before = len(served(sidecar))

    def build(p: beam.Pipeline) -> None:
        out = p | beam.Create([4, 10]) | beam.ParDo(_EmitOffsets())
        assert_that(out, equal_to([(4, i) for i in range(4)] + [(10, i) for i in range(10)]))

    run(sidecar.address, build, runner)
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
