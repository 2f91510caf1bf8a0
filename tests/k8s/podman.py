"""podman for the image and pod tests: the project's configuration, built images, cleanup.

``podman(...)`` runs podman with the containers.conf that ``scripts/podman.sh``
writes (runc, cgroupfs, ulimits within the machine's hard limits).
``built_image(variant)`` runs ``scripts/build-image.sh`` (a no-op when the image
of the current content exists; ``make test`` builds them before pytest) and
returns the tag. ``Containers`` names every container and pod a test starts
with a unique prefix and removes them all at the end, even when the test fails.
A missing podman is a failure with the command that installs it, never a skip.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence

import pytest

from tests.k8s.manifests import ROOT

SCRIPTS = ROOT / "scripts"
BUILD_TIMEOUT = 1800.0  # a cold build of base + image on a busy 2-core machine


@functools.cache
def _env() -> dict[str, str]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run `make system-deps` (or `make test`, "
                    "which does) as root")
    conf = subprocess.run([str(SCRIPTS / "podman.sh"), "--print-conf"], check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()
    return {**os.environ, "CONTAINERS_CONF": conf}


def podman(*args: str, timeout: float = 120.0, check: bool = True,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], env=_env(), capture_output=True, text=True,
                            timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


@functools.cache
def built_image(variant: str) -> str:
    """Tag of the image ``scripts/build-image.sh VARIANT`` gives (building it if needed)."""
    _env()
    out = subprocess.run([str(SCRIPTS / "build-image.sh"), variant], capture_output=True,
                         text=True, timeout=BUILD_TIMEOUT, env=_env())
    if out.returncode != 0:
        raise AssertionError(f"build-image.sh {variant} failed:\n{out.stderr[-5000:]}")
    return out.stdout.strip().splitlines()[-1]


def short(tag: str) -> str:
    """``harness-pool:X`` for ``localhost/harness-pool:X`` (how manifests name images)."""
    return tag.removeprefix("localhost/")


class Containers:
    """Names for a test's containers and pods, all removed by ``cleanup()``."""

    def __init__(self, label: str) -> None:
        self.prefix = f"hp-{label}-{uuid.uuid4().hex[:6]}"
        self._containers: list[str] = []
        self._pods: list[str] = []

    def container(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        self._containers.append(name)
        return name

    def pod(self) -> str:
        self._pods.append(self.prefix)
        return self.prefix

    def cleanup(self) -> None:
        for pod in self._pods:
            podman("pod", "rm", "--force", "--time", "5", pod, check=False, timeout=120)
        for name in self._containers:
            podman("rm", "--force", "--time", "5", name, check=False, timeout=120)
        leftover = podman("ps", "--all", "--filter", f"name={self.prefix}", "--format",
                          "{{.Names}}", check=False).stdout.split()
        assert not leftover, f"containers left behind: {leftover}"


def logs(name: str) -> str:
    out = podman("logs", name, check=False, timeout=60)
    return out.stdout + out.stderr


def exec_in(name: str, *cmd: str, timeout: float = 120.0, check: bool = True,
            user: str | None = None) -> subprocess.CompletedProcess[str]:
    args: Sequence[str] = ("exec", *(("--user", user) if user else ()), name, *cmd)
    return podman(*args, timeout=timeout, check=check)

