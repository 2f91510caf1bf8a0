"""Building blocks for the job-dependencies benchmark (issue 9); not the benchmark itself.

Three ways to give one SDK worker a Beam job's dependencies, each timed from
"assignment known" to "packages importable", against a real
``ArtifactRetrievalService`` on a free port:

- ``prepare_cold``: ``harness_pool.deps.prepare`` on an empty cache (the first
  stage of a job in a pod: download, build the environment with pip);
- ``prepare_warm``: ``prepare`` again for the same job (a later stage: no
  RPC, no pip, a lock and a manifest read);
- ``container_boot``: what Beam's SDK container boot does for *every* worker
  (sdks/python/container/boot.go, 2.61): resolve and download every
  artifact into a fresh ``staged/``, create a virtual environment, then pip
  the requirements in two rounds and each extra package twice
  (``--force-reinstall --no-deps``, then with dependencies). Offline here, so
  ``--no-index --no-build-isolation`` are added; the boot's own cold
  interpreter start and Beam import (about 1.1 s, see DESIGN.md) are not
  included: the phase 2 benchmark adds them by measuring real processes.

Run ``.venv/bin/python -m bench.deps_blocks [--rounds 3]`` for a quick look;
prints one JSON object with the medians in milliseconds: wall time, and CPU
time (this process plus its children: pip, setuptools), which a busy machine
disturbs much less than wall time.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

from harness_pool.deps import EnvCache, WorkerFacts, prepare
from harness_pool.deps import manifest as mf
from harness_pool.deps.artifacts import ArtifactClient
from harness_pool.deps.installer import BASE_PTH, Installer, site_dirs
from tests.deps.helpers import ArtifactServer, build_sdist, file_artifact, make_wheel

_SESSION: list[bytes] = []


def main_session() -> bytes:
    """A real pickled main session (Beam's default pickler, dill), as
    ``--save_main_session`` stages it: a small ``__main__`` with an import and a global;
    made once per run in a fresh interpreter."""
    if not _SESSION:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / mf.MAIN_SESSION
            subprocess.run([sys.executable, "-c", (
                "import sys, collections\n"
                "from apache_beam.internal import pickler\n"
                "WORDS = collections.Counter(['a', 'b', 'a'])\n"
                "pickler.dump_session(sys.argv[1])\n"), str(path)],
                check=True, capture_output=True, timeout=120)
            _SESSION.append(path.read_bytes())
    return _SESSION[0]


def make_beam_job(root: Path, version: str = "0.1") -> list[Any]:
    """A job as Beam's stager sends it: --requirements_file with a filled cache,
    --extra_package (an sdist needing six, which the worker has), --save_main_session.
    ``version`` is the sdist's: another version is other content (another environment)."""
    files = root / "runner"
    files.mkdir(parents=True)
    sdist = build_sdist(root, "mypkg", version, requires=("six",), out=files)
    wheel = make_wheel(files, "reqpkg", "2.0")
    (files / mf.REQUIREMENTS).write_text("reqpkg==2.0\n")
    (files / mf.EXTRA_PACKAGES).write_text(f"{sdist.name}\n")
    (files / mf.MAIN_SESSION).write_bytes(main_session())
    return [file_artifact(path) for path in (files / mf.REQUIREMENTS, wheel, sdist,
                                             files / mf.EXTRA_PACKAGES,
                                             files / mf.MAIN_SESSION)]


def prepare_once(deps: list[Any], endpoint: str, cache: EnvCache, facts: WorkerFacts,
                 semi: Path) -> float:
    began = time.monotonic()
    prepared = prepare(deps, artifact_endpoint=endpoint, runner_worker_id="1-1",
                       semi_dir=semi, cache=cache, deadline=time.monotonic() + 600,
                       facts=facts)
    took = time.monotonic() - began
    prepared.close()
    return took


def container_boot(deps: list[Any], endpoint: str, workdir: Path) -> float:
    """Beam's boot for one worker: materialize everything, fresh venv, pip as the boot does."""
    began = time.monotonic()
    staged = workdir / "staged"
    staged.mkdir(parents=True)
    artifacts = mf.parse_dependencies(deps)
    with ArtifactClient(endpoint, "1-1") as client:
        replacements = client.resolve(artifacts, time.monotonic() + 120)
        for artifact, replacement in zip(artifacts, replacements, strict=True):
            with open(staged / artifact.name, "wb") as out:
                client.fetch(artifact, replacement, out, time.monotonic() + 120)
    env = workdir / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    base = Installer().base_site_dirs
    (site_dirs(env)[0] / BASE_PTH).write_text(
        "".join(f"import site; site.addsitedir({d!r})\n" for d in base))
    pip = [sys.executable, "-m", "pip", "--isolated", "--python", str(env / "bin" / "python"),
           "install", "--no-cache-dir", "--disable-pip-version-check", "--no-index",
           "--no-build-isolation"]
    requirements = str(staged / mf.REQUIREMENTS)
    _run(pip + ["-r", requirements, "--no-deps", "--find-links", str(staged)], check=False)
    _run(pip + ["-r", requirements, "--find-links", str(staged)])
    for line in (staged / mf.EXTRA_PACKAGES).read_text().split():
        _run(pip + ["--upgrade", "--force-reinstall", "--no-deps", str(staged / line)])
        _run(pip + [str(staged / line)])
    return time.monotonic() - began


def _run(argv: list[str], check: bool = True) -> None:
    subprocess.run(argv, check=check, capture_output=True, timeout=600)


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _measure(times: dict[str, list[float]], name: str, run: Any, *args: Any) -> None:
    cpu = _cpu()
    times[name].append(run(*args))
    times[name + "_cpu"].append(_cpu() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hp-deps-bench-"))
    names = ("prepare_cold", "prepare_warm", "container_boot")
    times: dict[str, list[float]] = {n + s: [] for n in names for s in ("", "_cpu")}
    try:
        deps = make_beam_job(root)
        facts = WorkerFacts.detect()
        with ArtifactServer() as server:
            for n in range(args.rounds):
                cache = EnvCache(root / f"cache-{n}")
                _measure(times, "prepare_cold", prepare_once, deps, server.endpoint, cache,
                         facts, root / f"cold-{n}")
                _measure(times, "prepare_warm", prepare_once, deps, server.endpoint, cache,
                         facts, root / f"warm-{n}")
                _measure(times, "container_boot", container_boot, deps, server.endpoint,
                         root / f"boot-{n}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({name: round(statistics.median(values) * 1000, 1)
                      for name, values in times.items()} | {"rounds": args.rounds}))


if __name__ == "__main__":
    main()
