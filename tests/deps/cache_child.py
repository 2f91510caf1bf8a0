"""A worker process using the environment cache, for the multi-process tests.

``python -m tests.deps.cache_child ROOT KEY [options]`` acquires KEY in the
cache at ROOT, prints one JSON line ({"outcome", "pid", "path", "manifest"}),
then holds its lease until stdin closes (``--hold``) or exits.

Builders: ``--files N --file-bytes B --pause S`` writes N files of B bytes,
sleeping S seconds after each (a slow build with many moments to be killed
at); ``--wheel PATH`` builds a real environment with pip installing that
wheel (``--staged`` is the folder it is in). Each build appends this pid to
ROOT/builders.log first, so a test can count builds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from harness_pool.deps.envcache import EnvCache
from harness_pool.deps.installer import Installer
from harness_pool.deps.plan import EnvKey, InstallStep, StepKind


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("key")
    parser.add_argument("--files", type=int, default=1)
    parser.add_argument("--file-bytes", type=int, default=1000)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--wheel", default="")
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()
    root = Path(args.root)
    cache = EnvCache(root)

    def build(tmp: Path, final: Path) -> dict[str, object]:
        with open(root / "builders.log", "a") as log:
            log.write(f"{os.getpid()}\n")
        if args.wheel:
            wheel = Path(args.wheel)
            step = InstallStep(StepKind.INSTALL, (wheel.name,))
            return Installer().build(tmp, final, [step], wheel.parent,
                                     time.monotonic() + args.deadline)
        tmp.mkdir(parents=True)
        for i in range(args.files):
            (tmp / f"part-{i}").write_bytes(b"x" * args.file_bytes)
            time.sleep(args.pause)
        return {"site_packages": [], "distributions": [], "parts": args.files}

    lease, outcome = cache.acquire(EnvKey(args.key), build, time.monotonic() + args.deadline)
    print(json.dumps({"outcome": str(outcome), "pid": os.getpid(), "path": str(lease.path),
                      "manifest": lease.manifest}), flush=True)
    if args.hold:
        sys.stdin.read()
    lease.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
