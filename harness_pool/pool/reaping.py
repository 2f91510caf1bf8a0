"""Child processes as Linux sees them: /proc state, subreaper mode, reaping orphans.

A pooled worker may start processes of its own (a DoFn that runs a command and
never waits for it). When the worker exits, such orphans are re-parented to the
nearest *child subreaper* ancestor, or to PID 1. In a container the sidecar
often *is* PID 1, and an exited orphan nobody waits for stays a zombie
forever. So:

- the fork server is a subreaper and reaps everything (see ``forkserver``);
- the sidecar reaps zombie children it does not own when it is PID 1 or a
  subreaper (``ReapMode``), and can make itself a subreaper.

Nothing here keeps state; the supervisor thread calls ``reap_orphans``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import os
from collections.abc import Collection

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


class ReapMode(enum.Enum):
    AUTO = "auto"  # reap when PID 1 or already a subreaper (e.g. started by a wrapper)
    ON = "on"  # become a subreaper and reap
    OFF = "off"  # never: an embedding process reaps its own children

    def __str__(self) -> str:
        return self.value


def _prctl(option: int, arg: int | ctypes.c_int | ctypes._Pointer) -> int:  # type: ignore[type-arg]
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return int(libc.prctl(option, arg, 0, 0, 0))


def become_subreaper() -> bool:
    """Makes this process adopt its descendants' orphans; False where unsupported."""
    try:
        return _prctl(_PR_SET_CHILD_SUBREAPER, 1) == 0
    except (OSError, AttributeError):
        return False


def is_subreaper() -> bool:
    value = ctypes.c_int(0)
    try:
        ok = _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.pointer(value)) == 0
    except (OSError, AttributeError):
        return False
    return ok and value.value != 0


def reaps_orphans(mode: ReapMode) -> bool:
    """Whether this process must reap orphans it adopts, making it a subreaper for ON."""
    if mode is ReapMode.OFF:
        return False
    if mode is ReapMode.ON:
        become_subreaper()
        return True
    return os.getpid() == 1 or is_subreaper()


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], ppid [1])."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2:].decode().split()


def state(pid: int) -> str | None:
    """The process's state letter ("R", "S", "Z", ...); None when it is gone."""
    fields = _stat(pid)
    return fields[0] if fields else None


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks after boot): tells a reused pid apart."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def is_same(pid: int, ticks: int | None) -> bool:
    """The process ``pid`` is still the one that started at ``ticks`` (and not a zombie)."""
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":
        return False
    return ticks is None or int(fields[19]) == ticks


def wait_adopted(pid: int) -> tuple[bool, int | None]:
    """Reaps ``pid`` if it is our (adopted) child and has exited.

    Returns (is our child, exit code or None while it runs).
    """
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False, None
    if got == 0:
        return True, None
    return True, os.waitstatus_to_exitcode(status)


def _zombie_children() -> list[int]:
    me = str(os.getpid())
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields and fields[1] == me and fields[0] == "Z":
                out.append(int(name))
    return out


def reap_orphans(owned: Collection[int]) -> list[tuple[int, int]]:
    """Reaps zombie children whose pids nobody in this process waits for.

    ``owned``: pids someone will reap themselves (``Popen`` objects, tracked
    workers). Cheap when there is nothing to do: one ``waitid`` peek.
    """
    try:
        peek = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return []
    if peek is None:
        return []
    reaped = []
    for pid in _zombie_children():
        if pid in owned:
            continue
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if got == pid:
            reaped.append((pid, os.waitstatus_to_exitcode(status)))
    return reaped
