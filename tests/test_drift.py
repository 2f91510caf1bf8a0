"""What the project declares agrees with what it is: Makefile targets, requires-python.

- Every ``python -m MODULE`` and ``./scripts/...`` the Makefile runs exists (``make
  bench`` once pointed at a module that did not).
- ``requires-python`` is a range ``>=3.A,<3.B`` that holds the interpreter the tests
  run on and the one mypy checks for; the code needs no newer Python than 3.A
  (vermin reads every module's syntax and standard-library use); the pinned Beam
  and apache-flink declare every 3.x in the range, and each dependency as
  installed here accepts 3.A.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAKEFILE = (ROOT / "Makefile").read_text()


def _range() -> tuple[int, int]:
    spec = PYPROJECT["project"]["requires-python"]
    m = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", spec)
    assert m, f"requires-python {spec!r}: expected >=3.A,<3.B"
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("module", sorted(set(re.findall(r"python -m ([\w.]+)", MAKEFILE))))
def test_makefile_modules_exist(module: str) -> None:
    if module == "pytest":
        return
    sys.path.insert(0, str(ROOT))
    try:
        assert importlib.util.find_spec(module) is not None, f"Makefile runs -m {module}"
    finally:
        sys.path.remove(str(ROOT))


@pytest.mark.parametrize("script", sorted(set(re.findall(r"\./(scripts/[\w./-]+)", MAKEFILE))))
def test_makefile_scripts_exist(script: str) -> None:
    path = ROOT / script
    assert path.is_file() and os.access(path, os.X_OK), f"Makefile runs ./{script}"


def test_bench_target_lists_every_benchmark() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.run_all", "--list"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    modules = sorted(p.stem[len("bench_"):] for p in (ROOT / "bench").glob("bench_*.py"))
    assert out == modules and "startup" in out


def test_requires_python_holds_the_tested_and_checked_interpreters() -> None:
    lo, hi = _range()
    assert lo <= sys.version_info[1] < hi, f"tests run on 3.{sys.version_info[1]}"
    mypy = PYPROJECT["tool"]["mypy"]["python_version"]
    assert lo <= int(mypy.split(".")[1]) < hi, f"mypy checks for {mypy}"


def test_code_needs_no_newer_python_than_declared() -> None:
    lo, _ = _range()
    out = subprocess.run(
        [str(Path(sys.executable).parent / "vermin"), "--no-tips", "--eval-annotations",
         "--violations", f"-t=3.{lo}-", "--exclude-regex", r"harness_pool/v1/", "harness_pool"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"code needs a Python newer than 3.{lo}:\n{out.stdout[-3000:]}"


def test_beam_and_flink_support_every_declared_python() -> None:
    lo, hi = _range()
    for dist in ("apache-beam", "apache-flink"):
        classifiers = importlib.metadata.metadata(dist).get_all("Classifier") or []
        minors = {int(c.rsplit("3.", 1)[1]) for c in classifiers
                  if re.search(r"Python :: 3\.\d+$", c)}
        missing = [f"3.{m}" for m in range(lo, hi) if m not in minors]
        assert not missing, f"{dist} does not declare {missing}; narrow requires-python"


def test_installed_dependencies_accept_the_lowest_declared_python() -> None:
    lo, _ = _range()
    refusing = []
    for req in map(Requirement, PYPROJECT["project"]["dependencies"]):
        requires = importlib.metadata.metadata(req.name)["Requires-Python"]
        if requires and f"3.{lo}" not in SpecifierSet(requires):
            refusing.append(f"{req.name} {importlib.metadata.version(req.name)}: {requires}")
    assert not refusing, f"installed dependencies refuse 3.{lo}: {refusing}"
