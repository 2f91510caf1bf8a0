"""Reads the output of ``demo/jobs/reactive_count.py`` and judges it: replays, never resets.

The job writes, per subtask attempt, a file ``counts-<pid>-<subtask>-<attempt>.csv``
with a header ``#open,<unix time>,<pid>,<subtask>,<parallelism>,<attempt>,<keys>,<shift>``
and one ``key,count,value`` line per record, ``count`` being the key's count
within the value's bucket (``value >> shift``). Within a bucket a key's values
reach the counter in increasing order (one split reader emits them in order,
across rescales and restores), so with exactly-once state every line must
satisfy::

    count == (value - bucket start) // keys + 1

A replay from a checkpoint writes the same pairs again (allowed); state that
was lost or reset writes a smaller count, a record counted twice a larger one.
Each line is checked on its own, whatever the order in which attempts ran.

A line still being written when a file is read is ignored: only text up to the
last newline counts. Pure functions: they take file texts (``read_folder`` for
convenience reads a folder).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

#: How many bad lines ``KeyedOutput.problems`` keeps (the total is counted apart).
MAX_PROBLEMS = 20


@dataclasses.dataclass
class Attempt:
    """One subtask attempt's file."""

    name: str
    opened_at: float
    pid: int
    subtask: int
    parallelism: int
    records: int = 0


@dataclasses.dataclass
class KeyedOutput:
    attempts: list[Attempt]
    counts: dict[str, int]  # key -> its count: the sum over buckets of the largest count
    bad_lines: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(a.records for a in self.attempts)


def expected_count(value: int, keys: int, shift: int) -> int:
    """What the count of ``value`` must be with exactly-once state (module docstring)."""
    start = (value >> shift) << shift
    return (value - start) // keys + 1


def parse(files: Mapping[str, str]) -> KeyedOutput:
    """Reads ``{file name: text}`` and checks every complete line."""
    attempts: list[Attempt] = []
    largest: dict[tuple[str, int], int] = defaultdict(int)
    out = KeyedOutput(attempts, {})
    for name, text in sorted(files.items()):
        complete = text[: text.rfind("\n") + 1]
        attempt: Attempt | None = None
        keys = shift = 0
        for n, line in enumerate(complete.splitlines(), 1):
            if line.startswith("#open,"):
                fields = line.split(",")
                attempt = Attempt(name, float(fields[1]), int(fields[2]), int(fields[3]),
                                  int(fields[4]))
                keys, shift = int(fields[6]), int(fields[7])
                attempts.append(attempt)
                continue
            if not line or attempt is None:
                continue
            key, count_text, value_text = line.split(",")
            count, value = int(count_text), int(value_text)
            attempt.records += 1
            bucket = (key, value >> shift)
            largest[bucket] = max(largest[bucket], count)
            want = expected_count(value, keys, shift)
            if count != want:
                out.bad_lines += 1
                if len(out.problems) < MAX_PROBLEMS:
                    what = "state lost or reset" if count < want else "counted twice"
                    out.problems.append(
                        f"{name}:{n} (subtask {attempt.subtask}/{attempt.parallelism}, opened "
                        f"{attempt.opened_at:.1f}): key {key} value {value} has count {count}, "
                        f"expected {want} ({what})")
    for (key, _bucket), count in largest.items():
        out.counts[key] = out.counts.get(key, 0) + count
    return out


def read_folder(folder: Path) -> KeyedOutput:
    return parse({p.name: p.read_text(errors="replace") for p in folder.glob("counts-*.csv")})


def count_problems(out: KeyedOutput) -> list[str]:
    """Every line whose count is not what exactly-once state gives (empty: all good)."""
    if not out.bad_lines:
        return []
    more = out.bad_lines - len(out.problems)
    return out.problems + ([f"... and {more} more"] if more > 0 else [])


def attempts_since(out: KeyedOutput, since: float) -> list[Attempt]:
    return [a for a in out.attempts if a.opened_at >= since]


def parallelisms(attempts: Iterable[Attempt]) -> set[int]:
    return {a.parallelism for a in attempts}
