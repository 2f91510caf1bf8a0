"""Content-addressed store of the artifacts a pod has retrieved, and what each identity held.

Layout under ``root`` (the environment cache's ``blobs/``)::

    <sha256>                a complete artifact, named by its content hash
    .partial/<random>       a download in progress (flock'ed by its writer)
    .ids/<identity>         the sha256 an artifact identity resolved to

Invariants:
- a file named ``<sha256>`` holds exactly those bytes: downloads go to
  ``.partial/``, are hashed while written, and are renamed into place only
  once the hash is known (and checked against the manifest by the caller);
- ``.ids/<identity>`` is written (temp + rename) only after its blob is in
  place, so a remembered hash always named a complete blob at the time;
  a blob may be evicted later, and the caller then fetches again;
- a partial download whose writer died is recognized by its free ``flock``
  and removed by ``collect_garbage``.

The point of ``.ids``: Beam's job servers (2.61) send no content hash in the
manifest, but they put a per-job staging token in every artifact's path, so
one identity (the serialized ``ArtifactInformation``) always names the same
bytes. The second stage of a job in this pod finds every identity here and
needs no ``GetArtifact`` at all; a new job, even with identical files, has new
identities, downloads once, and then shares the environment by content.

Threads: none of its own; safe for several processes at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from harness_pool.deps.errors import CacheError, CacheFullError


def io_error(what: str, exc: OSError) -> CacheError | CacheFullError:
    """A foreign ``OSError`` as the cache error it means (a full disk is its own kind)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CacheFullError(f"{what}: the cache volume is full ({exc.strerror}); "
                              "give the cache volume more room (its emptyDir sizeLimit) or "
                              "lower --env-cache-size so eviction starts earlier")
    return CacheError(f"{what}: {exc}")


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._partial = root / ".partial"
        self._ids = root / ".ids"
        for directory in (root, self._partial, self._ids):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise io_error(f"artifact store {root}", exc) from exc

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def has(self, sha256: str) -> bool:
        """True when the blob is present; marks it used (its mtime orders eviction)."""
        try:
            os.utime(self.path(sha256))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise io_error(f"artifact store {self.root}", exc) from exc
        return True

    def recall(self, identity: str) -> str | None:
        try:
            text = (self._ids / identity).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise io_error(f"artifact store {self.root}", exc) from exc
        return text if len(text) == 64 else None

    def remember(self, identity: str, sha256: str) -> None:
        target = self._ids / identity
        temp = self._ids / f".{identity}.{uuid.uuid4().hex}"
        try:
            temp.write_text(sha256)
            os.replace(temp, target)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise io_error(f"artifact store {self.root}", exc) from exc

    @contextlib.contextmanager
    def partial(self) -> Iterator[tuple[Path, IO[bytes]]]:
        """A locked temp file to download into; removed on exit unless ``commit`` moved it."""
        path = self._partial / uuid.uuid4().hex
        try:
            handle = open(path, "xb")
        except OSError as exc:
            raise io_error(f"artifact store {self.root}", exc) from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield path, handle
        finally:
            handle.close()
            path.unlink(missing_ok=True)

    def commit(self, partial: Path, handle: IO[bytes], sha256: str) -> Path:
        """Moves a finished download into place under its hash."""
        try:
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(partial, self.path(sha256))
        except OSError as exc:
            raise io_error(f"artifact store {self.root}", exc) from exc
        return self.path(sha256)

    def put_bytes(self, data: bytes, sha256: str) -> Path:
        with self.partial() as (path, handle):
            try:
                handle.write(data)
            except OSError as exc:
                raise io_error(f"artifact store {self.root}", exc) from exc
            return self.commit(path, handle, sha256)

    def link_into(self, sha256: str, target: Path) -> None:
        """Puts the blob at ``target`` (hard link, else copy), atomically replacing it.

        Raises ``FileNotFoundError`` when the blob was evicted meanwhile.
        """
        temp = target.parent / f".{target.name}.{uuid.uuid4().hex}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self.path(sha256), temp)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
                shutil.copyfile(self.path(sha256), temp)
            os.replace(temp, target)
        except FileNotFoundError:
            temp.unlink(missing_ok=True)
            raise
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise io_error(f"staging {target}", exc) from exc

    def entries(self) -> list[tuple[Path, int, float]]:
        """(path, size, last used) of every complete blob."""
        out = []
        with os.scandir(self.root) as it:
            for entry in it:
                if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                out.append((Path(entry.path), st.st_size, st.st_mtime))
        return out

    def collect_garbage(self) -> int:
        """Removes partial downloads whose writer is gone; returns how many."""
        removed = 0
        for path in list(self._partial.iterdir()):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            finally:
                os.close(fd)
            path.unlink(missing_ok=True)
            removed += 1
        return removed
