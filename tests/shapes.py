"""The pipeline shapes every SDK-worker mode must run (pooled, fixed-endpoint).

Each function builds its part of a pipeline and asserts its result with
``assert_that``, so it runs on any runner: ``run(address, shapes.word_count)``.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.timeutil import TimeDomain

LARGE = 6 * 1024 * 1024


def word_count(p: beam.Pipeline) -> None:
    """Several stages: a side input, a shuffle, a count."""
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


class BufferUntilTimer(beam.DoFn):
    """Keyed bag state flushed by an event-time timer at the end of the window."""

    BUFFER = userstate.BagStateSpec("buffer", VarIntCoder())
    SEEN = userstate.CombiningValueStateSpec("seen", VarIntCoder(),
                                             beam.combiners.CountCombineFn())
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


def state_and_timers(p: beam.Pipeline) -> None:
    out = p | beam.Create([("a", 3), ("b", 1), ("a", 1), ("a", 2)]) | beam.ParDo(
        BufferUntilTimer())
    assert_that(out, equal_to([("a", [1, 2, 3], 3), ("b", [1], 1)]))


def large_elements(p: beam.Pipeline) -> None:
    """Elements of several MB cross the data plane both ways and a shuffle."""
    size = LARGE
    out = (
        p
        | beam.Create([0, 1, 2])
        | beam.Map(lambda i: (i % 2, chr(ord("a") + i) * size))
        | beam.GroupByKey()
        | beam.MapTuple(lambda k, vs: (k, sorted((len(v), v[0]) for v in vs)))
    )
    assert_that(out, equal_to([(0, [(size, "a"), (size, "c")]), (1, [(size, "b")])]))


class _CountUpTo(RestrictionProvider):
    def initial_restriction(self, element):
        return OffsetRange(0, element)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return restriction.size()

    def split(self, element, restriction):
        return restriction.split(3)


class EmitOffsets(beam.DoFn):
    def process(self, element, tracker=beam.DoFn.RestrictionParam(_CountUpTo())):
        position = tracker.current_restriction().start
        while tracker.try_claim(position):
            yield (element, position)
            position += 1


def splittable(p: beam.Pipeline) -> None:
    out = p | beam.Create([4, 10]) | beam.ParDo(EmitOffsets())
    assert_that(out, equal_to([(4, i) for i in range(4)] + [(10, i) for i in range(10)]))
