"""The environment cache with real processes: one build per key, crash safety, LRU, full disk."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness_pool.deps.envcache import MANIFEST, BuildFn, EnvCache, Outcome
from harness_pool.deps.errors import CacheBusyError, CacheFullError
from harness_pool.deps.plan import EnvKey
from tests.deps.conftest import Packages
from tests.deps.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
KEY = EnvKey("env-" + "a" * 40)


class Children:
    """Child processes of a test, each killed and reaped at the end whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, root: Path, key: str, *args: str, hold: bool = False
              ) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "tests.deps.cache_child", str(root), key, *args]
        if hold:
            argv.append("--hold")
        proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    try:
        yield kids
    finally:
        kids.close()


def first_line(proc: subprocess.Popen[str]) -> dict:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"child {proc.pid} printed nothing: {proc.communicate(timeout=30)[1][-2000:]}"
    return json.loads(line)


def slow_build(files: int, pause: float) -> BuildFn:
    def build(tmp: Path, final: Path) -> dict[str, object]:
        tmp.mkdir(parents=True)
        for i in range(files):
            (tmp / f"part-{i}").write_bytes(b"x" * 1000)
            time.sleep(pause)
        return {"site_packages": [], "distributions": [], "parts": files}
    return build


def payload_build(size: int) -> BuildFn:
    def build(tmp: Path, final: Path) -> dict[str, object]:
        tmp.mkdir(parents=True)
        (tmp / "payload").write_bytes(os.urandom(size))
        return {"site_packages": [], "distributions": []}
    return build


def assert_consistent(root: Path) -> None:
    """Every environment under envs/ is complete: its manifest and every part it lists."""
    for env in (root / "envs").iterdir():
        manifest = json.loads((env / MANIFEST).read_text())
        parts = manifest.get("parts")
        if parts is not None:
            assert len(list(env.glob("part-*"))) == parts, env


def test_one_build_for_many_processes_asking_at_once(tmp_path: Path,
                                                     children: Children) -> None:
    root = tmp_path / "cache"
    EnvCache(root)
    procs = [children.spawn(root, KEY, "--files", "20", "--pause", "0.05") for _ in range(4)]
    results = [first_line(p) for p in procs]
    outcomes = sorted(r["outcome"] for r in results)
    assert outcomes.count("built") == 1, outcomes
    assert set(outcomes) <= {"built", "waited", "hit"}
    assert len((root / "builders.log").read_text().split()) == 1
    assert {r["manifest"]["created"] for r in results} == {results[0]["manifest"]["created"]}
    assert_consistent(root)
    assert list((root / "building").iterdir()) == []


def builds_started(root: Path) -> int:
    log = root / "builders.log"
    return len(log.read_text().split()) if log.exists() else 0


def kill_during_build(children: Children, root: Path, delay: float, *args: str) -> None:
    """Starts a builder, waits until its build has begun, SIGKILLs it ``delay`` s later."""
    started = builds_started(root)
    proc = children.spawn(root, KEY, *args)
    wait_for(lambda: builds_started(root) > started or proc.poll() is not None, timeout=60,
             what="the child started building")
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def test_a_builder_killed_at_random_moments_never_leaves_a_half_environment(
        tmp_path: Path, children: Children) -> None:
    root = tmp_path / "cache"
    EnvCache(root)
    rng = random.Random(9)
    for _ in range(6):
        # the build writes 30 files 20 ms apart, then the manifest, then renames
        kill_during_build(children, root, rng.uniform(0.0, 0.7), "--files", "30",
                          "--pause", "0.02")
        assert_consistent(root)
        if (root / "envs" / KEY).exists():
            assert len(list((root / "envs" / KEY).glob("part-*"))) == 30
            break  # it finished just before the kill: complete, as it must be
        assert list((root / "building").iterdir()), "the kill did not land mid-build"
        EnvCache(root).evict(target=0)  # an eviction pass tidies what the dead builder left
        assert list((root / "building").iterdir()) == []
    assert builds_started(root) >= 2
    lease, outcome = EnvCache(root).acquire(KEY, slow_build(30, 0), time.monotonic() + 60)
    assert outcome in (Outcome.BUILT, Outcome.HIT)
    assert len(list(lease.path.glob("part-*"))) == 30
    lease.close()
    assert list((root / "building").iterdir()) == []


@pytest.mark.slow
def test_a_real_pip_build_killed_midway_leaves_the_cache_usable(
        tmp_path: Path, children: Children, packages: Packages) -> None:
    root = tmp_path / "cache"
    EnvCache(root)
    rng = random.Random(4)
    for delay in (rng.uniform(0.05, 0.5), rng.uniform(0.5, 2.0)):  # venv creation, pip
        kill_during_build(children, root, delay, "--wheel", str(packages.tiny1))
        for env in (root / "envs").iterdir():  # if it got that far, it is complete
            assert (env / MANIFEST).exists()
            assert list(env.glob("lib/python*/site-packages/tinypkg/__init__.py")), env
    proc = children.spawn(root, KEY, "--wheel", str(packages.tiny1))
    result = first_line(proc)
    assert result["outcome"] in ("built", "hit")
    site = Path(result["path"]) / result["manifest"]["site_packages"][0]
    out = subprocess.run([sys.executable, "-c", "import tinypkg; print(tinypkg.VALUE)"],
                         env=dict(os.environ, PYTHONPATH=str(site)), capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "tinypkg-1.0", out.stderr
    EnvCache(root).evict(target=1 << 40)  # a pass collects any abandoned build
    assert list((root / "building").iterdir()) == []


def test_a_waiter_builds_itself_when_the_builder_dies(tmp_path: Path,
                                                      children: Children) -> None:
    root = tmp_path / "cache"
    EnvCache(root)
    builder = children.spawn(root, KEY, "--files", "1000", "--pause", "0.05")
    wait_for(lambda: (root / "builders.log").exists(), what="the child started building")
    result: dict[str, object] = {}

    def ask() -> None:
        lease, outcome = EnvCache(root).acquire(KEY, slow_build(3, 0), time.monotonic() + 60)
        result["outcome"] = outcome
        lease.close()

    thread = threading.Thread(target=ask)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()  # waiting for the builder's lock
    builder.send_signal(signal.SIGKILL)
    thread.join(60)
    assert result["outcome"] is Outcome.BUILT
    assert_consistent(root)
    assert [p.name for p in (root / "building").iterdir()] == []


def test_a_lock_held_too_long_fails_within_the_deadline(tmp_path: Path,
                                                        children: Children) -> None:
    root = tmp_path / "cache"
    EnvCache(root)
    children.spawn(root, KEY, "--files", "1000", "--pause", "0.05")
    wait_for(lambda: (root / "builders.log").exists(), what="the child started building")
    began = time.monotonic()
    with pytest.raises(CacheBusyError) as err:
        EnvCache(root).acquire(KEY, slow_build(1, 0), time.monotonic() + 1.0)
    assert time.monotonic() - began < 10
    assert f"environment {KEY}" in str(err.value) and f"{KEY}.build" in str(err.value)


def build_sized(cache: EnvCache, name: str, size: int) -> None:
    lease, _ = cache.acquire(EnvKey(name), payload_build(size), time.monotonic() + 30)
    lease.close()


def present(root: Path) -> set[str]:
    return {p.name for p in (root / "envs").iterdir()}


def test_lru_eviction_spares_environments_in_use_until_their_user_dies(
        tmp_path: Path, children: Children) -> None:
    root = tmp_path / "cache"
    cache = EnvCache(root)  # no bound while filling it
    build_sized(cache, "env-a", 100_000)
    user = children.spawn(root, "env-a", hold=True)  # a live worker using env-a
    assert first_line(user)["outcome"] == "hit"
    for name in ("env-b", "env-c", "env-d"):
        time.sleep(0.02)  # distinct last-use times
        build_sized(cache, name, 100_000)
    size = json.loads((root / "envs" / "env-a" / MANIFEST).read_text())["size_bytes"]
    cache.max_bytes = int(2.5 * size)
    assert cache.evict() == 2
    assert present(root) == {"env-a", "env-d"}  # a is in use; b and c were the oldest idle
    cache.max_bytes = int(0.5 * size)
    assert cache.evict() == 1
    assert present(root) == {"env-a"}  # still in use: kept, above the bound
    user.send_signal(signal.SIGKILL)  # the worker dies without releasing anything
    user.communicate(timeout=30)
    assert cache.evict() == 1
    assert present(root) == set()
    assert cache.counters.evictions == 4
    assert list((root / "trash").iterdir()) == []


def test_a_build_evicts_the_least_recently_used_to_stay_in_bounds(tmp_path: Path) -> None:
    cache = EnvCache(tmp_path / "cache")
    build_sized(cache, "env-a", 50_000)
    size = cache.usage().environment_bytes
    cache.max_bytes = int(2.5 * size)
    build_sized(cache, "env-b", 50_000)
    time.sleep(0.02)
    lease, outcome = cache.acquire(EnvKey("env-a"), payload_build(1), time.monotonic() + 5)
    assert outcome is Outcome.HIT  # a is now more recently used than b
    lease.close()
    build_sized(cache, "env-c", 50_000)
    assert present(tmp_path / "cache") == {"env-a", "env-c"}
    usage = cache.usage()
    assert usage.environments == 2 and usage.total_bytes <= cache.max_bytes


def test_full_disk_from_the_build_is_a_clear_error_and_the_cache_stays_consistent(
        tmp_path: Path) -> None:
    cache = EnvCache(tmp_path / "cache")

    def full(tmp: Path, final: Path) -> dict[str, object]:
        tmp.mkdir(parents=True)
        (tmp / "half").write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CacheFullError, match="cache volume is full"):
        cache.acquire(KEY, full, time.monotonic() + 10)
    assert present(tmp_path / "cache") == set()
    assert list((tmp_path / "cache" / "building").iterdir()) == []
    # nothing idle to evict, so no second attempt
    assert (cache.counters.build_failures, cache.counters.full_disk_retries) == (1, 1)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs (the machine runs the suite as root), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; test_full_disk_from_the_build_... covers "
                    "the same path through an injected ENOSPC")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True,
                   timeout=30)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True, timeout=30)


def test_a_full_disk_evicts_idle_environments_then_reports_what_does_not_fit(
        small_disk: Path) -> None:
    root = small_disk / "cache"
    cache = EnvCache(root)  # no byte bound: only the disk limits it
    build_sized(cache, "env-old", 1_500_000)
    build_sized(cache, "env-new", 3_000_000)  # fits only once env-old is gone
    assert present(root) == {"env-new"}
    assert cache.counters.full_disk_retries == 1 and cache.counters.evictions == 1
    lease, _ = cache.acquire(EnvKey("env-new"), payload_build(1), time.monotonic() + 5)
    try:
        with pytest.raises(CacheFullError, match="cache volume is full"):
            build_sized(cache, "env-big", 2_000_000)  # env-new is in use: nothing to evict
    finally:
        lease.close()
    assert present(root) == {"env-new"}
    assert (root / "envs" / "env-new" / "payload").stat().st_size == 3_000_000
    assert list((root / "building").iterdir()) == []
    build_sized(cache, "env-big", 2_000_000)  # idle now: evicted, and the build fits
    assert present(root) == {"env-big"}
