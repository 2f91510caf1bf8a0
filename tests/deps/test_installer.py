"""The installer: pip into a virtual environment layered over the worker's own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness_pool.deps import manifest as mf
from harness_pool.deps.errors import InstallError
from harness_pool.deps.installer import Installer, pip_argv, pip_failure
from harness_pool.deps.plan import InstallStep, StepKind
from tests.deps.conftest import Packages
from tests.deps.helpers import make_wheel

STAGED = "/semi/staged"


@pytest.mark.parametrize("step, tail", [
    (InstallStep(StepKind.INSTALL, (), ("requirements.txt", "ab-req.txt")),
     ["-r", f"{STAGED}/requirements.txt", "-r", f"{STAGED}/ab-req.txt"]),
    (InstallStep(StepKind.FORCE_EXTRA, ("a-1.tar.gz",)),
     ["--upgrade", "--force-reinstall", "--no-deps", f"{STAGED}/a-1.tar.gz"]),
    (InstallStep(StepKind.INSTALL, ("a-1.tar.gz", "workflow.tar.gz"), ("requirements.txt",)),
     ["-r", f"{STAGED}/requirements.txt", f"{STAGED}/a-1.tar.gz",
      f"{STAGED}/workflow.tar.gz"]),
], ids=["requirements", "force-extra", "install-all"])
def test_pip_argv_uses_staged_files_only(step: InstallStep, tail: list[str]) -> None:
    argv = pip_argv("/w/python", "/env/bin/python", STAGED, step)
    assert argv[:7] == ["/w/python", "-m", "pip", "--isolated", "--python", "/env/bin/python",
                        "install"]
    for flag in ("--no-index", "--no-build-isolation", "--no-cache-dir", "--no-input"):
        assert flag in argv
    assert argv[argv.index("--find-links") + 1] == STAGED
    assert argv[-len(tail):] == tail


@pytest.mark.parametrize("output, requirement, last", [
    ("Looking in links: /s\nERROR: Could not find a version that satisfies the requirement "
     "nosuchdep==9.9 (from needy) (from versions: none)\nERROR: No matching distribution found "
     "for nosuchdep==9.9\n", "nosuchdep==9.9",
     "ERROR: No matching distribution found for nosuchdep==9.9"),
    ("Processing ./broken-1.0.tar.gz\n  error: subprocess-exited-with-error\n\n  × Preparing "
     "metadata did not run successfully.\nerror: metadata-generation-failed\n\n× Encountered "
     "error while generating package metadata.\n╰─> from file:///s/broken-1.0.tar.gz\n",
     "", "error: metadata-generation-failed"),
    ("", "", "(pip printed nothing)"),
], ids=["missing-dependency", "failed-build", "silent"])
def test_pip_failure_finds_the_requirement_and_the_last_line(output: str, requirement: str,
                                                            last: str) -> None:
    assert pip_failure(output) == (requirement, last)


def build(tmp_path: Path, steps: list[InstallStep], staged: Path, name: str = "env",
          installer: Installer | None = None) -> tuple[Path, dict]:
    tmp, final = tmp_path / f"building-{name}", tmp_path / name
    facts = (installer or Installer()).build(tmp, final, steps, staged, time.monotonic() + 300)
    tmp.rename(final)
    return final, facts


def probe(env: Path, facts: dict, code: str) -> dict:
    """Runs ``code`` in a fresh interpreter with the environment activated as prepare does."""
    entries = [str(env / rel) for rel in facts["site_packages"]]
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from harness_pool.deps.prepare import PreparedEnvironment, PrepareStats\n"
        f"PreparedEnvironment(Path('.'), None, 'k', tuple({entries!r}), PrepareStats())"
        ".activate()\n" + code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=str(Path(__file__).resolve().parents[2]))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_job_environment_wins_over_the_worker_without_reinstalling_what_it_has(
        tmp_path: Path, packages: Packages) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    for path in (packages.mypkg, packages.reqpkg):
        shutil.copy(path, staged)
    shutil.copy(packages.workflow, staged / mf.WORKFLOW)
    # the worker has six 1.17; the job brings its own (older) six as an extra package
    make_wheel(staged, "six", "1.0.0", module="VALUE = 'job six'\n__version__ = '1.0.0'\n")
    (staged / mf.REQUIREMENTS).write_text("reqpkg==2.0\n")
    extras = ("mypkg-0.1.tar.gz", "six-1.0.0-py3-none-any.whl")
    steps = [InstallStep(StepKind.FORCE_EXTRA, extras),
             InstallStep(StepKind.INSTALL, extras + (mf.WORKFLOW,), (mf.REQUIREMENTS,))]
    installer = Installer()
    env, facts = build(tmp_path, steps, staged, installer=installer)
    assert installer.pip_runs == 2
    names = {name: version for name, version, _ in facts["distributions"]}
    assert names == {"mypkg": "0.1", "reqpkg": "2.0", "six": "1.0.0", "wfpkg": "1.0"}
    seen = probe(env, facts, (
        "import mypkg, reqpkg, six, wfpkg, yaml\n"
        "print(json.dumps({m.__name__: m.__file__ for m in (mypkg, reqpkg, six, wfpkg, yaml)}))"))
    for module in ("mypkg", "reqpkg", "six", "wfpkg"):
        assert seen[module].startswith(str(env)), seen
    assert not seen["yaml"].startswith(str(env))  # the worker's own PyYAML, untouched


@pytest.mark.slow
def test_a_requirement_that_cannot_be_met_names_it_and_pips_last_line(
        tmp_path: Path, packages: Packages) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    shutil.copy(packages.needs_missing, staged)
    (staged / mf.REQUIREMENTS).write_text("needy==1.0\n")
    with pytest.raises(InstallError) as err:
        build(tmp_path, [InstallStep(StepKind.INSTALL, (), (mf.REQUIREMENTS,))], staged)
    assert err.value.requirement == "nosuchdep==9.9"
    last = "ERROR: No matching distribution found for nosuchdep==9.9 (from needy)"
    assert err.value.pip_line == last
    assert str(err.value) == ("pip could not install requirements from requirements.txt "
                              f"(requirement nosuchdep==9.9); pip exited 1: {last}")


@pytest.mark.slow
def test_an_sdist_that_does_not_build_is_named(tmp_path: Path,
                                              packages: Packages) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    shutil.copy(packages.broken, staged)
    with pytest.raises(InstallError) as err:
        build(tmp_path, [InstallStep(StepKind.FORCE_EXTRA, ("broken-1.0.tar.gz",))], staged)
    text = str(err.value)
    assert "pip could not install extra packages broken-1.0.tar.gz" in text
    assert err.value.pip_line and err.value.pip_line in text


def test_a_pip_run_past_its_time_is_killed_with_its_children(tmp_path: Path,
                                                             packages: Packages) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    shutil.copy(packages.tiny1, staged)
    installer = Installer(pip_timeout=0.3)
    began = time.monotonic()
    with pytest.raises(InstallError, match="did not finish installing packages "
                                           "tinypkg-1.0-py3-none-any.whl within 0.3s"):
        build(tmp_path, [InstallStep(StepKind.INSTALL, (packages.tiny1.name,))], staged,
              installer=installer)
    assert time.monotonic() - began < 30
    leftovers = subprocess.run(["pgrep", "-f", f"--find-links {staged}"], capture_output=True,
                               text=True).stdout.split()
    assert leftovers == [], leftovers


def test_no_time_left_runs_no_pip(tmp_path: Path) -> None:
    installer = Installer()
    with pytest.raises(InstallError, match="no time left to install requirements from "
                                           "requirements.txt"):
        installer.build(tmp_path / "t", tmp_path / "f",
                        [InstallStep(StepKind.INSTALL, (), (mf.REQUIREMENTS,))], tmp_path,
                        time.monotonic() - 1)
    assert installer.pip_runs == 0


def test_scripts_are_pointed_at_the_final_path(tmp_path: Path) -> None:
    from harness_pool.deps.installer import _retarget_scripts

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tool").write_text(f"#!{tmp_path}/building-x/bin/python\nprint('hi')\n")
    (bin_dir / "data").write_bytes(b"\x00\x01")
    os.symlink("/usr/bin/env", bin_dir / "link")
    _retarget_scripts(bin_dir, f"{tmp_path}/building-x", f"{tmp_path}/envs/x")
    assert (bin_dir / "tool").read_text() == f"#!{tmp_path}/envs/x/bin/python\nprint('hi')\n"
    assert (bin_dir / "data").read_bytes() == b"\x00\x01"
