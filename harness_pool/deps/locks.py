"""File locks between worker processes: ``flock`` with a bounded wait.

``flock`` locks belong to an open file description and the kernel drops
them when the holding process dies, however it dies: a SIGKILLed builder or
user never leaves a lock behind, so no pid files and no staleness guesses are
needed. File descriptors are opened close-on-exec (Python's default), so pip
and other children never inherit a lock.

A lock file may be unlinked by its exclusive holder (eviction tidies up);
``FileLock.acquire`` therefore checks, once granted, that the path still
names the inode it locked, and starts over if not.

Threads: a ``FileLock`` belongs to one thread. Waits poll every
``POLL_SECONDS`` until the deadline and raise ``CacheBusyError`` naming the
lock and what holds it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from harness_pool.deps.errors import CacheBusyError, CacheError

POLL_SECONDS = 0.02


class FileLock:
    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, exclusive: bool, deadline: float | None,
                clock: Callable[[], float] = time.monotonic) -> bool:
        """Takes the lock; waits until ``deadline`` (``None``: do not wait, return False).

        Returns True when granted; raises ``CacheBusyError`` when a bounded
        wait runs out.
        """
        if self._fd is not None:
            raise CacheError(f"{self.what}: lock {self.path} taken twice by one holder")
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise CacheError(f"{self.what}: cannot open lock {self.path}: {exc}") from exc
            try:
                if not self._wait(fd, mode, exclusive, deadline, clock):
                    return False
                if _same_file(fd, self.path):
                    self._fd, fd = fd, -1
                    return True
                # the file was unlinked by its previous holder: lock the new one
            finally:
                if fd >= 0:
                    os.close(fd)  # closing drops whatever we were granted

    def _wait(self, fd: int, mode: int, exclusive: bool, deadline: float | None,
              clock: Callable[[], float]) -> bool:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise CacheError(f"{self.what}: flock {self.path}: {exc}") from exc
            if deadline is None:
                return False
            if clock() >= deadline:
                kind = "exclusive" if exclusive else "shared"
                raise CacheBusyError(
                    f"{self.what}: {kind} lock {self.path} not granted before the deadline "
                    "(another worker holds it)")
            time.sleep(POLL_SECONDS)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def unlink(self) -> None:
        """Removes the lock file; only its exclusive holder may do this."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
