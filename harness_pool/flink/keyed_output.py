"""Reads the output of ``demo/jobs/reactive_count.py`` and judges it: replays, never resets.

The job writes, per subtask attempt, a file ``counts-<pid>-<subtask>-<attempt>.csv``
with a header ``#open,<unix time>,<pid>,<subtask>,<parallelism>,<attempt>`` and one
``key,count,value`` line per record. Pure functions here take file texts (or a
folder, for convenience) and say what they show:

- ``consistency_problems``: per key, the largest count written must equal the
  number of distinct values written. Every restore from a checkpoint replays
  the same values from the same source positions, so replays write values
  again but never add distinct ones; state lost or reset makes the largest
  count smaller, a count applied twice makes it larger.
- ``reset_problems``: an attempt opened after a rescale must continue each key
  it meets from the checkpointed count, so its first count for a key counted
  before is more than 1. (A job restarted without its state would replay from
  scratch and pass the first check; this one catches it.)

A line still being written when a file is read is ignored: only text up to the
last newline counts.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path


@dataclasses.dataclass
class Attempt:
    """One subtask attempt's file."""

    name: str
    opened_at: float
    pid: int
    subtask: int
    parallelism: int
    first: dict[str, int] = dataclasses.field(default_factory=dict)  # key -> first count
    records: int = 0


@dataclasses.dataclass
class KeyedOutput:
    attempts: list[Attempt]
    max_count: dict[str, int]
    values: dict[str, set[int]]
    first_seen: dict[str, float]  # key -> opened_at of the earliest attempt that counted it

    @property
    def records(self) -> int:
        return sum(a.records for a in self.attempts)


def parse(files: Mapping[str, str]) -> KeyedOutput:
    """Reads ``{file name: text}``; lines after the last newline are ignored."""
    attempts: list[Attempt] = []
    max_count: dict[str, int] = defaultdict(int)
    values: dict[str, set[int]] = defaultdict(set)
    first_seen: dict[str, float] = {}
    for name, text in sorted(files.items()):
        complete = text[: text.rfind("\n") + 1]
        attempt: Attempt | None = None
        for line in complete.splitlines():
            if line.startswith("#open,"):
                _, opened, pid, subtask, parallelism, _attempt = line.split(",")
                attempt = Attempt(name, float(opened), int(pid), int(subtask), int(parallelism))
                attempts.append(attempt)
                continue
            if not line or attempt is None:
                continue
            key, count_text, value_text = line.split(",")
            count = int(count_text)
            attempt.records += 1
            attempt.first.setdefault(key, count)
            max_count[key] = max(max_count[key], count)
            values[key].add(int(value_text))
            first_seen[key] = min(first_seen.get(key, attempt.opened_at), attempt.opened_at)
    return KeyedOutput(attempts, dict(max_count), dict(values), first_seen)


def read_folder(folder: Path) -> KeyedOutput:
    return parse({p.name: p.read_text(errors="replace") for p in folder.glob("counts-*.csv")})


def consistency_problems(out: KeyedOutput) -> list[str]:
    """Keys whose largest count differs from their number of distinct values."""
    problems = []
    for key in sorted(out.max_count):
        largest, distinct = out.max_count[key], len(out.values[key])
        if largest != distinct:
            what = "state lost or reset" if largest < distinct else "records counted twice"
            problems.append(f"key {key}: largest count {largest} but {distinct} distinct "
                            f"values ({what})")
    return problems


def reset_problems(out: KeyedOutput, since: float) -> list[str]:
    """Attempts opened at or after ``since`` (unix time) that restarted a known key at 1."""
    problems = []
    for attempt in out.attempts:
        if attempt.opened_at < since:
            continue
        for key, first in sorted(attempt.first.items()):
            known_before = out.first_seen.get(key, since) < attempt.opened_at
            if first == 1 and known_before:
                problems.append(f"{attempt.name} (subtask {attempt.subtask}/"
                                f"{attempt.parallelism}, opened {attempt.opened_at:.1f}) "
                                f"counted key {key} from 1: its state was reset")
    return problems


def attempts_since(out: KeyedOutput, since: float) -> list[Attempt]:
    return [a for a in out.attempts if a.opened_at >= since]


def parallelisms(attempts: Iterable[Attempt]) -> set[int]:
    return {a.parallelism for a in attempts}
