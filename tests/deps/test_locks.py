"""FileLock: bounded waits, and a lock file unlinked by its holder is never trusted."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from harness_pool.deps.errors import CacheBusyError
from harness_pool.deps.locks import FileLock


def test_shared_holders_coexist_and_exclude_an_exclusive_one(tmp_path: Path) -> None:
    path = tmp_path / "k.use"
    a, b, c = (FileLock(path, "env k") for _ in range(3))
    assert a.acquire(exclusive=False, deadline=None)
    assert b.acquire(exclusive=False, deadline=None)
    assert not c.acquire(exclusive=True, deadline=None)  # no wait: refused at once
    a.release()
    b.release()
    assert c.acquire(exclusive=True, deadline=None)
    c.release()


def test_a_bounded_wait_ends_with_an_error_naming_the_lock(tmp_path: Path) -> None:
    holder, waiter = FileLock(tmp_path / "k.build", "env k"), FileLock(tmp_path / "k.build",
                                                                       "env k")
    holder.acquire(exclusive=True, deadline=None)
    began = time.monotonic()
    with pytest.raises(CacheBusyError, match=r"env k: exclusive lock .*k\.build not granted"):
        waiter.acquire(exclusive=True, deadline=time.monotonic() + 0.3)
    assert 0.25 < time.monotonic() - began < 5
    assert not waiter.held
    holder.release()


def test_a_waiter_never_keeps_a_lock_on_an_unlinked_file(tmp_path: Path) -> None:
    path = tmp_path / "k.use"
    evictor, user = FileLock(path, "env k"), FileLock(path, "env k")
    evictor.acquire(exclusive=True, deadline=None)
    got: list[bool] = []
    thread = threading.Thread(target=lambda: got.append(
        user.acquire(exclusive=False, deadline=time.monotonic() + 10)))
    thread.start()
    time.sleep(0.1)  # the user is now waiting on the old file
    evictor.unlink()
    evictor.release()
    thread.join(10)
    assert got == [True]
    assert user._fd is not None
    assert os.fstat(user._fd).st_ino == os.stat(path).st_ino  # the new file, not the old one
    user.release()
