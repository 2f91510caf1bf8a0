"""CPU time and memory of a process, as Linux's ``/proc/<pid>/stat`` reports them.

``parse_stat`` is pure (the file's bytes in, a ``ProcUsage`` out); ``read_usage``
reads the file. What counts as a process's CPU: user + system time of all its
threads, plus that of its children it has waited for (``cutime`` + ``cstime``:
a user subprocess counts once the worker has reaped it; one still running, or
one the worker never waits for, does not). Memory: the resident set (RSS).

A zombie's stat still holds its final times (RSS 0); once reaped, the file is
gone and ``read_usage`` returns None.
"""

from __future__ import annotations

import dataclasses
import os

#: Clock ticks per second and bytes per page of this machine (fixed for its uptime).
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Fields of /proc/<pid>/stat after "pid (comm) ", numbered from 0 (state is 0):
# proc(5) numbers them from 1 with pid = 1, so field n is index n - 3 here.
_UTIME, _STIME, _CUTIME, _CSTIME, _STARTTIME, _RSS = 11, 12, 13, 14, 19, 21


@dataclasses.dataclass(frozen=True)
class ProcUsage:
    cpu_seconds: float  # utime + stime + cutime + cstime
    rss_bytes: int
    start_ticks: int  # when it started (ticks after boot): tells a reused pid apart


def parse_stat(raw: bytes, ticks_per_second: int = TICKS_PER_SECOND,
               page_size: int = PAGE_SIZE) -> ProcUsage:
    """Parses the content of ``/proc/<pid>/stat``; raises ValueError when it is not one.

    The command name may hold spaces and parentheses: fields start after the last ")".
    """
    end = raw.rfind(b")")
    if end < 0:
        raise ValueError("not a /proc/<pid>/stat line (no ')')")
    fields = raw[end + 2:].split()
    if len(fields) <= _RSS:
        raise ValueError(f"/proc/<pid>/stat line with {len(fields)} fields after the name; "
                         f"expected more than {_RSS}")
    ticks = sum(int(fields[i]) for i in (_UTIME, _STIME, _CUTIME, _CSTIME))
    return ProcUsage(cpu_seconds=ticks / ticks_per_second,
                     rss_bytes=max(0, int(fields[_RSS])) * page_size,
                     start_ticks=int(fields[_STARTTIME]))


def read_usage(pid: int) -> ProcUsage | None:
    """The process's usage now; None when it is gone (or unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        return parse_stat(raw)
    except (OSError, ValueError):
        return None
