"""The pod's environment cache: content-keyed job environments, built once, shared, bounded.

Layout under ``root`` (an ``emptyDir`` volume of the TaskManager pod)::

    envs/<key>/                    complete environments; harness-pool-env.json inside
    building/<key>-<random>/       an environment being built (its builder holds <key>.build)
    trash/                         environments being deleted
    locks/<key>.use                shared flock: held by every worker using <key>
    locks/<key>.build              exclusive flock: held by the one worker building <key>
    evict.lock                     exclusive flock: one eviction pass at a time
    blobs/                         retrieved artifacts by content (see blobs.py)

Invariants:
- ``envs/<key>`` only ever appears by ``rename`` of a finished build whose
  manifest was written (and fsynced) last: a builder killed at any moment
  leaves at most a ``building/`` directory, removed by the next builder of the
  key or the next eviction pass, never a half environment under ``envs/``;
- one builder per key: ``<key>.build`` is exclusive; workers asking for the
  same key meanwhile wait for it (bounded by their deadline), then use the
  result, or build themselves if the builder died or failed;
- an environment is in use while some process holds ``<key>.use`` shared
  (from ``acquire`` until ``EnvLease.close`` or the process's death, which the
  kernel turns into a release: a dead user never pins an environment);
  eviction takes it exclusively without waiting, so it only ever removes an
  environment nobody uses, and nobody can start using it meanwhile;
- the cache (environments plus blobs) is kept under ``max_bytes`` by
  evicting the least recently used idle entries after each build; entries in
  use may keep it above (logged);
- a full disk while building: idle entries are evicted and the build tried
  once more; if it fails again, ``CacheFullError`` and the cache is as it was.

Lock order: ``<key>.use`` before ``<key>.build``; ``evict.lock`` before any
``.use``/``.build``, which eviction only ever tries without waiting, so there
is no deadlock. Threads: an ``EnvCache`` may be shared by threads only for
``usage()``; ``acquire`` and ``evict`` belong to the calling thread.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness_pool.deps.blobs import BlobStore, io_error
from harness_pool.deps.conflicts import Distribution
from harness_pool.deps.errors import CacheError, CacheFullError
from harness_pool.deps.locks import FileLock
from harness_pool.deps.plan import EnvKey

_LOG = logging.getLogger("harness_pool.deps.envcache")

MANIFEST = "harness-pool-env.json"

#: build(tmp, final) fills ``tmp`` (later renamed to ``final``) and returns facts for the manifest.
BuildFn = Callable[[Path, Path], dict[str, object]]


class Outcome(enum.Enum):
    HIT = "hit"  # found complete: no wait, no pip
    WAITED = "waited"  # another worker was building it: waited, then used its result
    BUILT = "built"  # this worker built it

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass
class CacheCounters:
    """What this process's ``EnvCache`` did (the sidecar sums the workers' reports)."""

    hits: int = 0
    waits: int = 0
    builds: int = 0
    build_failures: int = 0
    evictions: int = 0
    evicted_bytes: int = 0
    full_disk_retries: int = 0


@dataclasses.dataclass(frozen=True)
class CacheUsage:
    environments: int
    environment_bytes: int
    blobs: int
    blob_bytes: int
    limit_bytes: int | None

    @property
    def total_bytes(self) -> int:
        return self.environment_bytes + self.blob_bytes


class EnvLease:
    """One worker's use of one environment; keeps it from eviction until ``close``."""

    def __init__(self, key: EnvKey, path: Path, manifest: dict[str, Any],
                 lock: FileLock) -> None:
        self.key = key
        self.path = path
        self.manifest = manifest
        self._lock = lock

    @property
    def site_packages(self) -> list[str]:
        return [str(self.path / rel) for rel in self.manifest.get("site_packages", [])]

    @property
    def distributions(self) -> list[Distribution]:
        rows = self.manifest.get("distributions", [])
        return [Distribution(str(n), str(v), tuple(t)) for n, v, t in rows]

    def close(self) -> None:
        self._lock.release()


class EnvCache:
    def __init__(self, root: str | Path, max_bytes: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._clock = clock
        self.counters = CacheCounters()
        self._envs = self.root / "envs"
        self._building = self.root / "building"
        self._trash = self.root / "trash"
        self._locks = self.root / "locks"
        for directory in (self._envs, self._building, self._trash, self._locks):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise io_error(f"environment cache {self.root}", exc) from exc
        self.blobs = BlobStore(self.root / "blobs")

    # -- using environments ---------------------------------------------------

    def acquire(self, key: EnvKey, build: BuildFn, deadline: float) -> tuple[EnvLease, Outcome]:
        """The environment ``key``, built by ``build`` unless present or being built."""
        use = self._lock(key, "use")
        use.acquire(exclusive=False, deadline=deadline, clock=self._clock)
        try:
            manifest = self._read_manifest(key)
            if manifest is not None:
                self.counters.hits += 1
                return EnvLease(key, self._envs / key, manifest, use), Outcome.HIT
            manifest, outcome = self._build_once(key, build, deadline)
        except BaseException:
            use.release()
            raise
        if outcome is Outcome.BUILT:
            self.evict(keep={key})
        return EnvLease(key, self._envs / key, manifest, use), outcome

    def _build_once(self, key: EnvKey, build: BuildFn,
                    deadline: float) -> tuple[dict[str, object], Outcome]:
        builder = self._lock(key, "build")
        waited = not builder.acquire(exclusive=True, deadline=None)
        if waited:
            _LOG.info("environment %s is being built by another worker; waiting", key)
            builder.acquire(exclusive=True, deadline=deadline, clock=self._clock)
        try:
            manifest = self._read_manifest(key)
            if manifest is not None:
                self.counters.waits += 1
                return manifest, Outcome.WAITED
            try:
                return self._build(key, build), Outcome.BUILT
            except CacheFullError as exc:
                self.counters.full_disk_retries += 1
                freed = self.evict(keep={key}, target=0)
                if not freed:
                    raise
                _LOG.warning("environment %s: disk full (%s); evicted %d idle entries, "
                             "building once more", key, exc, freed)
                return self._build(key, build), Outcome.BUILT
        finally:
            builder.release()

    def _build(self, key: EnvKey, build: BuildFn) -> dict[str, object]:
        self._remove_stale_builds(key)  # we hold <key>.build: any build of it is abandoned
        tmp = self._building / f"{key}-{uuid.uuid4().hex[:12]}"
        final = self._envs / key
        began = time.monotonic()
        try:
            facts = build(tmp, final)
            manifest: dict[str, object] = {"key": key, "created": time.time(), **facts}
            manifest["size_bytes"] = disk_usage(tmp)
            _write_synced(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
            os.rename(tmp, final)
            _fsync_dir(self._envs)
        except BaseException as exc:
            self.counters.build_failures += 1
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise io_error(f"building environment {key} in {self.root}", exc) from exc
            raise
        self.counters.builds += 1
        _LOG.info("environment %s built in %.1fs (%d bytes); cached at %s", key,
                  time.monotonic() - began, manifest["size_bytes"], final)
        return manifest

    def _read_manifest(self, key: EnvKey) -> dict[str, object] | None:
        path = self._envs / key / MANIFEST
        try:
            manifest = json.loads(path.read_bytes())
            os.utime(path)  # last use orders eviction
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CacheError(f"environment cache {self.root}: unreadable {path}: {exc}") from exc
        return manifest if isinstance(manifest, dict) else None

    def _lock(self, key: EnvKey, kind: str) -> FileLock:
        return FileLock(self._locks / f"{key}.{kind}", f"environment {key}")

    # -- bounding the cache ---------------------------------------------------

    def evict(self, keep: Iterable[str] = (), target: int | None = None) -> int:
        """Evicts idle entries, least recently used first, until the cache is at most
        ``target`` bytes (default ``max_bytes``); returns how many entries went."""
        limit = self.max_bytes if target is None else target
        if limit is None:
            return 0
        guard = FileLock(self.root / "evict.lock", f"environment cache {self.root}")
        if not guard.acquire(exclusive=True, deadline=None):
            return 0  # another worker is evicting right now
        try:
            self._collect_garbage()
            keep = set(keep)
            entries = self._entries()
            total = sum(size for _, size, _, _ in entries)
            evicted = 0
            for _, size, kind, name in sorted(entries):
                if total <= limit:
                    break
                if kind == "env":
                    if name in keep or not self._evict_env(EnvKey(name)):
                        continue
                else:
                    (self.blobs.root / name).unlink(missing_ok=True)
                total -= size
                evicted += 1
                self.counters.evictions += 1
                self.counters.evicted_bytes += size
            if total > limit:
                _LOG.warning("environment cache %s holds %d bytes, above its %d-byte limit: "
                             "the rest is in use", self.root, total, limit)
            return evicted
        finally:
            guard.release()

    def _evict_env(self, key: EnvKey) -> bool:
        use, build = self._lock(key, "use"), self._lock(key, "build")
        if not use.acquire(exclusive=True, deadline=None):
            return False  # in use by a live worker
        try:
            if not build.acquire(exclusive=True, deadline=None):
                return False
            try:
                doomed = self._trash / f"{key}-{uuid.uuid4().hex[:12]}"
                os.rename(self._envs / key, doomed)
                use.unlink()
                build.unlink()
            finally:
                build.release()
        except FileNotFoundError:
            return False
        finally:
            use.release()
        _LOG.info("environment %s evicted (least recently used, not in use)", key)
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def _entries(self) -> list[tuple[float, int, str, str]]:
        """(last used, bytes, "env"|"blob", name) of every complete entry."""
        out = []
        for env in self._envs.iterdir():
            try:
                st = (env / MANIFEST).stat()
                size = int(json.loads((env / MANIFEST).read_bytes()).get("size_bytes", 0))
            except (OSError, ValueError):
                continue
            out.append((st.st_mtime, size, "env", env.name))
        for path, size, used in self.blobs.entries():
            out.append((used, size, "blob", path.name))
        return out

    def _remove_stale_builds(self, key: EnvKey) -> None:
        for stale in self._building.glob(f"{key}-*"):
            _LOG.info("removing abandoned build %s", stale)
            shutil.rmtree(stale, ignore_errors=True)

    def _collect_garbage(self) -> None:
        for stale in list(self._building.iterdir()):
            key = EnvKey(stale.name.rsplit("-", 1)[0])
            builder = self._lock(key, "build")
            if builder.acquire(exclusive=True, deadline=None):
                try:
                    shutil.rmtree(stale, ignore_errors=True)
                finally:
                    builder.release()
        for leftover in list(self._trash.iterdir()):
            shutil.rmtree(leftover, ignore_errors=True)
        self.blobs.collect_garbage()

    # -- reporting --------------------------------------------------------------

    def usage(self) -> CacheUsage:
        entries = self._entries()
        envs = [size for _, size, kind, _ in entries if kind == "env"]
        blobs = [size for _, size, kind, _ in entries if kind == "blob"]
        return CacheUsage(len(envs), sum(envs), len(blobs), sum(blobs), self.max_bytes)


def disk_usage(path: Path) -> int:
    """Bytes ``path`` occupies on disk (allocated blocks, as ``du`` and sizeLimit count)."""
    total = 0
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
