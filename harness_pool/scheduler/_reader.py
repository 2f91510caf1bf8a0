"""Reading a YAML mapping while collecting every problem (the cycle file's loader uses it).

``Reader`` never stops at the first problem: each one names the field, the value
found and what was expected; ``parse_duration`` reads ``30s``, ``10m``, ``6h``.
"""

from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``12``, ``1.5``, ``"250ms"``, ``"30s"``, ``"10m"``, ``"6h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("a duration like 30s, 10m, 6h or a number of seconds")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("a non-negative duration")
    return seconds


class Reader:
    """Collects problems while reading a mapping; never stops at the first one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, where: str, value: Any, expected: str) -> None:
        self.problems.append(f"{where}: got {value!r}; expected {expected}")

    def mapping(self, data: Any, where: str) -> dict[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.problem(where, data, "a mapping")
            return {}
        return data

    def unknown(self, data: dict[str, Any], where: str, known: set[str]) -> None:
        for key in data:
            if key not in known:
                self.problem(f"{where}.{key}" if where else str(key), key,
                             f"one of {', '.join(sorted(known))}")

    def duration(self, data: dict[str, Any], key: str, where: str, default: float) -> float:
        if key not in data:
            return default
        try:
            return parse_duration(data[key])
        except ValueError as exc:
            self.problem(f"{where}.{key}", data[key], str(exc))
            return default

    def string(self, data: dict[str, Any], key: str, where: str, default: str = "",
               required: bool = False, choices: tuple[str, ...] = ()) -> str:
        if key not in data:
            if required:
                self.problems.append(f"{where}.{key}: missing; expected a string")
            return default
        value = data[key]
        if not isinstance(value, str) or (required and not value):
            self.problem(f"{where}.{key}", value, "a non-empty string")
            return default
        if choices and value not in choices:
            self.problem(f"{where}.{key}", value, f"one of {', '.join(choices)}")
            return default
        return value

    def integer(self, data: dict[str, Any], key: str, where: str, default: int | None,
                minimum: int = 0) -> int | None:
        if key not in data:
            return default
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.problem(f"{where}.{key}", value, f"an integer >= {minimum}")
            return default
        return value
