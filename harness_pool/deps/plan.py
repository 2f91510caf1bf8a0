"""What a job's staged files ask of the worker's environment, and the cache key for it.

Pure: no I/O. Two decisions, in the order the worker needs them:

1. ``make_plan(files, runtime)``: from the staged files' names, roles and
   content hashes alone (no file is read), which install duties exist, and
   the environment's cache key. A job with nothing to install gets
   ``NO_ENVIRONMENT``: no pip, no cache entry, no lock.
2. ``install_steps(plan, extra_packages_text)``: at most two pip runs doing
   what Beam's container boot (2.61, ``sdks/python/container/boot.go``) does
   in up to 2 + 2n + 1: first the ``--extra_package`` files with
   ``--force-reinstall --no-deps`` (the job's copy replaces the worker's,
   dependencies untouched), then one run for the requirements files, the
   extra packages' dependencies and the ``--setup_file`` sdist
   (``workflow.tar.gz``). One resolution instead of several in a row: a pin
   in the requirements that an extra package contradicts is pip's clear
   error instead of a silent last-one-wins.

Invariants:
- the key is a function of the content of every staged file that can reach
  pip (requirements may name any staged file through ``--find-links``), of
  the worker's interpreter and installed distributions, of Beam's version
  and of ``INSTALLER_VERSION``; the main session and the submission
  environment listing never are (they change with every submission but
  install nothing);
- a staged Beam SDK (``--sdk_location``) is never installed: it is checked
  against the worker's Beam (see ``conflicts.py``) and stays out of the key.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Iterable
from typing import NewType

from harness_pool.deps import manifest
from harness_pool.deps.errors import BadArtifactError
from harness_pool.deps.manifest import Role

EnvKey = NewType("EnvKey", str)

#: The key of "no environment needed".
NO_ENVIRONMENT = EnvKey("none")

#: Bump when the way an environment is built changes what it contains.
INSTALLER_VERSION = 1

#: Staged files that never reach pip, so never part of the key.
_NOT_INSTALLABLE = frozenset({manifest.MAIN_SESSION, manifest.SUBMISSION_ENVIRONMENT})


@dataclasses.dataclass(frozen=True)
class Runtime:
    """The worker interpreter an environment is built for (see ``runtime.py``)."""

    python: str  # implementation and full version, e.g. "cpython-3.11.7"
    platform: str  # sysconfig.get_platform(), e.g. "linux-x86_64"
    beam_version: str
    prefix: str  # sys.prefix of the worker's interpreter
    #: sha256 of every distribution (name==version) the interpreter has installed.
    fingerprint: str


@dataclasses.dataclass(frozen=True)
class StagedFile:
    name: str
    sha256: str
    role: Role = Role.STAGED


class StepKind(enum.Enum):
    FORCE_EXTRA = "extra_packages"  # the job's --extra_package files replace the worker's copies
    INSTALL = "install"  # requirements files, the extra packages' dependencies, the workflow

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class InstallStep:
    kind: StepKind
    files: tuple[str, ...] = ()  # staged packages, installed by path
    requirements: tuple[str, ...] = ()  # staged requirements files (pip -r)

    def describe(self) -> str:
        parts = []
        if self.requirements:
            parts.append("requirements from " + ", ".join(self.requirements))
        if self.files:
            noun = "extra packages " if self.kind is StepKind.FORCE_EXTRA else "packages "
            parts.append(noun + ", ".join(self.files))
        return " and ".join(parts)


@dataclasses.dataclass(frozen=True)
class Plan:
    key: EnvKey
    files: tuple[StagedFile, ...]
    main_session: bool
    sdk: StagedFile | None
    requirements: tuple[str, ...]
    extra_packages: bool
    workflow: bool

    @property
    def needs_environment(self) -> bool:
        return self.key != NO_ENVIRONMENT


def is_sdk(name: str) -> bool:
    """A staged Beam SDK: the sdist name the stager uses, or an ``apache_beam`` wheel."""
    return name == manifest.SDK_SOURCES or (name.startswith("apache_beam") and
                                            name.endswith(".whl") and "/" not in name)


def make_plan(files: Iterable[StagedFile], runtime: Runtime) -> Plan:
    staged = tuple(sorted(files, key=lambda f: (f.name, f.sha256)))
    names = {f.name for f in staged}
    requirements = tuple(
        [manifest.REQUIREMENTS] if manifest.REQUIREMENTS in names else []
    ) + tuple(sorted({f.name for f in staged if f.role is Role.PIP_REQUIREMENTS}))
    sdk = next((f for f in staged if is_sdk(f.name)), None)
    extra = manifest.EXTRA_PACKAGES in names
    workflow = manifest.WORKFLOW in names
    key = NO_ENVIRONMENT
    if requirements or extra or workflow:
        key = environment_key(staged, runtime)
    return Plan(key=key, files=staged, main_session=manifest.MAIN_SESSION in names, sdk=sdk,
                requirements=requirements, extra_packages=extra, workflow=workflow)


def environment_key(files: Iterable[StagedFile], runtime: Runtime) -> EnvKey:
    content = sorted({(f.name, f.sha256) for f in files
                      if f.name not in _NOT_INSTALLABLE and not is_sdk(f.name)})
    document = json.dumps({
        "installer": INSTALLER_VERSION,
        "runtime": dataclasses.asdict(runtime),
        "files": content,
    }, sort_keys=True)
    return EnvKey("env-" + hashlib.sha256(document.encode()).hexdigest()[:40])


def extra_package_names(text: str, staged: Iterable[str]) -> tuple[str, ...]:
    """The files ``extra_packages.txt`` lists, in order; each must have been staged."""
    available = set(staged)
    out: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        what = f"{manifest.EXTRA_PACKAGES} line {number}"
        manifest.safe_name(line, what)
        if line not in available:
            raise BadArtifactError(f"{what} names {line!r}, which the job did not stage")
        if line not in out:
            out.append(line)
    return tuple(out)


def install_steps(plan: Plan, extra_packages_text: str | None) -> list[InstallStep]:
    """The pip steps for ``plan``; ``extra_packages_text`` is the staged list, if any."""
    steps: list[InstallStep] = []
    extras: tuple[str, ...] = ()
    if plan.extra_packages:
        if extra_packages_text is None:
            raise BadArtifactError(f"{manifest.EXTRA_PACKAGES} was staged but could not be read")
        extras = extra_package_names(extra_packages_text, (f.name for f in plan.files))
        if extras:
            steps.append(InstallStep(StepKind.FORCE_EXTRA, extras))
    packages = extras + ((manifest.WORKFLOW,) if plan.workflow else ())
    if packages or plan.requirements:
        steps.append(InstallStep(StepKind.INSTALL, packages, plan.requirements))
    return steps
