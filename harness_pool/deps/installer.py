"""Builds one job environment: a virtual environment layered over the worker's own.

How (checked with pip 26 on Python 3.11):

1. ``venv.EnvBuilder(with_pip=False)`` creates ``<tmp>`` in-process (a few
   milliseconds: no interpreter is started);
2. a ``.pth`` file in its site-packages runs ``site.addsitedir`` for the
   worker's own site-packages, *after* the environment's: pip, run against
   ``<tmp>/bin/python``, sees every distribution the worker has and treats it
   as installed, and writes only what differs into ``<tmp>``;
3. ``<worker python> -m pip --isolated --python <tmp>/bin/python install
   --no-index --find-links <staged> --no-build-isolation ...`` per step (see
   ``pip_argv``): staged files only, never an index; sdists are built with the
   worker's setuptools and wheel (an isolated build would need an index);
   ``--isolated`` ignores pip's environment variables and config files, so a
   pod's pip.conf cannot change what an environment contains;
4. a distribution the worker has in another version is not uninstalled: it
   lives outside ``<tmp>`` (pip: "not uninstalling ..., outside
   environment"), the environment gets its own copy, and it wins because the
   worker puts the environment's site-packages first on ``sys.path``;
5. scripts in ``<tmp>/bin`` get their ``#!`` line pointed at the final path,
   since the cache renames ``<tmp>`` into place afterwards.

Every pip run is bounded by ``pip_timeout`` and by the caller's deadline; on
expiry its whole process group is killed. A failure raises ``InstallError``
naming the step, the requirement pip names and pip's last line; a full disk
raises ``CacheFullError``.

Threads: none; ``build`` runs pip in child processes and blocks.
"""

from __future__ import annotations

import os
import re
import signal
import site
import subprocess
import sys
import sysconfig
import time
import venv
from collections.abc import Callable, Sequence
from pathlib import Path

from harness_pool.deps.conflicts import Distribution
from harness_pool.deps.errors import CacheFullError, InstallError
from harness_pool.deps.plan import InstallStep, StepKind
from harness_pool.deps.runtime import normalize

BASE_PTH = "_harness_pool_base.pth"
_NO_SPACE = ("No space left on device", "[Errno 28]", "Disk quota exceeded")
_REQUIREMENT_RE = re.compile(
    r"(?:satisfies the requirement|No matching distribution found for|"
    r"Failed to build|Could not build wheels for|subprocess-exited-with-error.*?for) "
    r"'?([^\s')]+)")


def pip_argv(python: str, target_python: str, staged: str, step: InstallStep) -> list[str]:
    """The pip command line for one step (pure)."""
    argv = [python, "-m", "pip", "--isolated", "--python", target_python, "install",
            "--no-index", "--find-links", staged, "--no-build-isolation", "--no-cache-dir",
            "--disable-pip-version-check", "--no-input", "--no-warn-script-location",
            "--root-user-action=ignore", "--progress-bar=off"]
    if step.kind is StepKind.FORCE_EXTRA:
        argv += ["--upgrade", "--force-reinstall", "--no-deps"]
    for name in step.requirements:
        argv += ["-r", os.path.join(staged, name)]
    return argv + [os.path.join(staged, name) for name in step.files]


def pip_failure(output: str) -> tuple[str, str]:
    """(requirement pip names, pip's last line) from a failed run's output (pure)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR:", "error:"))]
    last = errors[-1] if errors else (lines[-1] if lines else "(pip printed nothing)")
    requirement = ""
    for line in reversed(lines):
        match = _REQUIREMENT_RE.search(line)
        if match:
            requirement = match.group(1)
            break
    return requirement, last


def site_dirs(prefix: Path) -> list[Path]:
    """The environment's purelib and platlib directories (one on most systems)."""
    scheme = "venv" if "venv" in sysconfig.get_scheme_names() else "posix_prefix"
    found: list[Path] = []
    for key in ("purelib", "platlib"):
        path = Path(sysconfig.get_path(key, scheme=scheme,
                                       vars={"base": str(prefix), "platbase": str(prefix)}))
        if path not in found:
            found.append(path)
    return found


def read_distributions(directories: Sequence[Path]) -> list[Distribution]:
    """The distributions installed in ``directories`` (their ``*.dist-info``)."""
    import importlib.metadata

    out = []
    for dist in importlib.metadata.distributions(path=[str(d) for d in directories]):
        name = dist.metadata["Name"]
        if not name:
            continue
        tops: set[str] = set()
        text = dist.read_text("top_level.txt")
        if text:
            tops.update(line.strip() for line in text.splitlines() if line.strip())
        else:
            for entry in dist.files or ():
                first = entry.parts[0] if entry.parts else ""
                if not first or first.endswith((".dist-info", ".pth")) or first in (
                        "..", "__pycache__"):
                    continue
                tops.add(first[:-3] if first.endswith(".py") else first)
        out.append(Distribution(normalize(name), dist.version, tuple(sorted(tops))))
    return sorted(out, key=lambda d: d.name)


class Installer:
    """Builds environments for one worker interpreter (``python``, default this one)."""

    def __init__(self, python: str = sys.executable, pip_timeout: float = 600.0,
                 base_site_dirs: Sequence[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.python = python
        self.pip_timeout = pip_timeout
        self.base_site_dirs = list(base_site_dirs if base_site_dirs is not None
                                   else [d for d in site.getsitepackages() if os.path.isdir(d)])
        self._clock = clock
        self.pip_runs = 0

    def build(self, tmp: Path, final: Path, steps: Sequence[InstallStep], staged: Path,
              deadline: float) -> dict[str, object]:
        """Creates the environment in ``tmp`` (to be renamed to ``final``); returns its facts."""
        venv.EnvBuilder(with_pip=False, symlinks=True, clear=False).create(tmp)
        dirs = site_dirs(tmp)
        lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in self.base_site_dirs)
        (dirs[0] / BASE_PTH).write_text(lines)
        target = str(tmp / "bin" / "python")
        for step in steps:
            self._run(pip_argv(self.python, target, str(staged), step), step, deadline)
        _retarget_scripts(tmp / "bin", str(tmp), str(final))
        return {
            "site_packages": [str(d.relative_to(tmp)) for d in dirs],
            "distributions": [[d.name, d.version, list(d.top_levels)]
                              for d in read_distributions(dirs)],
            "steps": [[str(s.kind), list(s.files)] for s in steps],
            "base_site_dirs": self.base_site_dirs,
        }

    def _run(self, argv: list[str], step: InstallStep, deadline: float) -> None:
        timeout = min(self.pip_timeout, deadline - self._clock())
        if timeout <= 0:
            raise InstallError(f"no time left to install {step.describe()} (StartWorker "
                               "deadline passed)", requirement=_names(step))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PYTHONNOUSERSITE"] = "1"
        self.pip_runs += 1
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise InstallError(f"pip did not finish installing {step.describe()} within "
                               f"{timeout:.3g}s; it was killed", requirement=_names(step)
                               ) from None
        except BaseException:
            _kill_group(proc)
            raise
        text = output.decode(errors="replace")
        if proc.returncode == 0:
            return
        requirement, last = pip_failure(text)
        if any(marker in text for marker in _NO_SPACE):
            raise CacheFullError(f"the environment cache volume is full while installing "
                                 f"{step.describe()}: {last}")
        raise InstallError(
            f"pip could not install {step.describe()}"
            + (f" (requirement {requirement})" if requirement else "")
            + f"; pip exited {proc.returncode}: {last}",
            requirement=requirement or _names(step), pip_line=last)


def _names(step: InstallStep) -> str:
    return ", ".join(step.requirements + step.files)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _retarget_scripts(bin_dir: Path, old: str, new: str) -> None:
    """Points ``#!`` lines of installed scripts at the environment's final path."""
    old_b, new_b = old.encode(), new.encode()
    for path in bin_dir.iterdir():
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head != b"#!":
            continue
        data = path.read_bytes()
        first, _, rest = data.partition(b"\n")
        if old_b in first:
            path.write_bytes(first.replace(old_b, new_b) + b"\n" + rest)
