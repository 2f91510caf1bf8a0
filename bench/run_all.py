"""Run every benchmark in ``bench/`` one after the other (``make bench``).

A benchmark is a module ``bench/bench_<name>.py`` with ``main(argv) -> int``;
each runs in its own ``python -m bench.bench_<name>`` process, so one that fails
or leaks does not spoil the next, and each writes its JSON and PNG under
``bench/results/`` as when run alone. At the end a table says which passed and
how long each took; the exit status is 1 if any failed.

    python -m bench.run_all                   # all, with their default sizes
    python -m bench.run_all --repeats 1       # a quick pass (forwarded to each)
    python -m bench.run_all --only startup proxy
    python -m bench.run_all --list
"""

from __future__ import annotations

import argparse
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PREFIX = "bench_"


def discover() -> list[str]:
    """Names (without the prefix) of every benchmark module, sorted."""
    return sorted(m.name[len(PREFIX):] for m in pkgutil.iter_modules([str(BENCH)])
                  if m.name.startswith(PREFIX))


def main(argv: list[str] | None = None) -> int:
    names = discover()
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME",
                        help=f"run only these ({', '.join(names)})")
    parser.add_argument("--repeats", type=int, help="forwarded to every benchmark")
    parser.add_argument("--list", action="store_true", help="print the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(names))
        return 0
    chosen = args.only or names
    results: list[tuple[str, int, float]] = []
    for name in chosen:
        cmd = [sys.executable, "-m", f"bench.{PREFIX}{name}"]
        if args.repeats is not None:
            cmd += ["--repeats", str(args.repeats)]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        began = time.monotonic()
        code = subprocess.call(cmd, cwd=BENCH.parent)
        results.append((name, code, time.monotonic() - began))
    print("\nbenchmark   result   seconds")
    for name, code, seconds in results:
        print(f"{name:<11} {'ok' if code == 0 else f'exit {code}':<8} {seconds:7.0f}")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
