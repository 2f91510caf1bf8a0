"""What this worker process is: its interpreter, installed distributions, imported modules.

A thin shell over ``sys``, ``sysconfig`` and ``importlib.metadata``. Phase 2
should call ``detect_runtime()`` and ``installed_distributions()`` once in the
fork server, after it has imported everything, and hand the results to
every forked worker (scanning the installed distributions costs tens of
milliseconds; a forked child inherits them for free). ``imported_modules()``
is cheap and must be taken in the worker itself, just before ``prepare``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import sys
import sysconfig
from collections.abc import Mapping

from harness_pool.deps.plan import Runtime


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Foo_Bar`` == ``foo-bar``)."""
    out = name.strip().lower()
    for char in "_.":
        out = out.replace(char, "-")
    while "--" in out:
        out = out.replace("--", "-")
    return out


def installed_distributions(path: list[str] | None = None) -> dict[str, str]:
    """Normalized name → version of every distribution on ``path`` (default ``sys.path``).

    The first one found wins, as for imports.
    """
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=path if path is not None else sys.path):
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalize(name), dist.version)
    return found


def detect_runtime(distributions: Mapping[str, str] | None = None) -> Runtime:
    dists = dict(distributions) if distributions is not None else installed_distributions()
    listing = "\n".join(f"{name}=={version}" for name, version in sorted(dists.items()))
    return Runtime(
        python=f"{sys.implementation.name}-{platform.python_version()}",
        platform=sysconfig.get_platform(),
        beam_version=dists.get("apache-beam", ""),
        prefix=sys.prefix,
        fingerprint=hashlib.sha256(listing.encode()).hexdigest(),
    )


def imported_modules() -> frozenset[str]:
    """Top-level names of the modules this process has imported from a file.

    Namespace packages (``google``, ``zope``) have no file and are left out:
    many distributions share them, and adding one to ``sys.path`` is harmless.
    """
    out = set()
    for name, module in list(sys.modules.items()):
        if "." in name or module is None:
            continue
        if getattr(module, "__file__", None):
            out.add(name)
    return frozenset(out)
