"""plan: what a job's staged files ask for, and the environment's cache key (pure)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from harness_pool.deps import manifest as mf
from harness_pool.deps.errors import BadArtifactError
from harness_pool.deps.manifest import Role
from harness_pool.deps.plan import (
    NO_ENVIRONMENT,
    InstallStep,
    Runtime,
    StagedFile,
    StepKind,
    install_steps,
    make_plan,
)

RUNTIME = Runtime(python="cpython-3.11.7", platform="linux-x86_64", beam_version="2.61.0",
                  prefix="/opt/venv", fingerprint="f" * 64)


def f(name: str, sha: str = "1", role: Role = Role.STAGED) -> StagedFile:
    return StagedFile(name, sha * 64 if len(sha) == 1 else sha, role)


@pytest.mark.parametrize("files", [
    [],
    [f(mf.MAIN_SESSION)],
    [f(mf.MAIN_SESSION), f(mf.SUBMISSION_ENVIRONMENT)],
    [f("mypkg-0.1.tar.gz")],  # staged but listed nowhere: Beam's boot installs nothing
    [f(mf.SDK_SOURCES)],
    [f("apache_beam-2.61.0-cp311-cp311-manylinux_2_17_x86_64.whl")],
], ids=["empty", "main-session", "session-and-listing", "unlisted-sdist", "sdk-tar", "sdk-wheel"])
def test_nothing_to_install_needs_no_environment(files: list[StagedFile]) -> None:
    plan = make_plan(files, RUNTIME)
    assert plan.key == NO_ENVIRONMENT and not plan.needs_environment
    assert install_steps(plan, None) == []


def test_main_session_and_sdk_are_noticed() -> None:
    plan = make_plan([f(mf.MAIN_SESSION), f(mf.SDK_SOURCES)], RUNTIME)
    assert plan.main_session and plan.sdk == f(mf.SDK_SOURCES)


@pytest.mark.parametrize("files", [
    [f(mf.REQUIREMENTS)],
    [f("abc-req.txt", role=Role.PIP_REQUIREMENTS)],
    [f(mf.EXTRA_PACKAGES), f("mypkg-0.1.tar.gz")],
    [f(mf.WORKFLOW)],
], ids=["requirements", "pip-requirements-role", "extra-packages", "workflow"])
def test_installable_files_need_an_environment(files: list[StagedFile]) -> None:
    plan = make_plan(files, RUNTIME)
    assert plan.needs_environment and plan.key.startswith("env-") and len(plan.key) == 44


BASE = [f(mf.REQUIREMENTS), f("dep-1.0-py3-none-any.whl", "2")]


def key(files: list[StagedFile], runtime: Runtime = RUNTIME) -> str:
    return make_plan(files, runtime).key


def test_key_ignores_order_main_session_listing_and_sdk() -> None:
    plain = key(BASE)
    assert key(list(reversed(BASE))) == plain
    assert key(BASE + [f(mf.MAIN_SESSION, "9")]) == plain
    assert key(BASE + [f(mf.SUBMISSION_ENVIRONMENT, "8")]) == plain
    assert key(BASE + [f(mf.SDK_SOURCES, "7")]) == plain


@pytest.mark.parametrize("change", [
    lambda files, rt: ([f(mf.REQUIREMENTS, "3"), files[1]], rt),
    lambda files, rt: (files + [f("other-2.0.tar.gz", "4")], rt),
    lambda files, rt: ([files[0], f("renamed-1.0-py3-none-any.whl", "2")], rt),
    lambda files, rt: (files, dataclasses.replace(rt, python="cpython-3.11.8")),
    lambda files, rt: (files, dataclasses.replace(rt, beam_version="2.60.0")),
    lambda files, rt: (files, dataclasses.replace(rt, platform="linux-aarch64")),
    lambda files, rt: (files, dataclasses.replace(rt, prefix="/other/venv")),
    lambda files, rt: (files, dataclasses.replace(rt, fingerprint="e" * 64)),
], ids=["content", "added-file", "renamed-file", "python", "beam", "platform", "interpreter",
        "installed-packages"])
def test_key_changes_with_content_and_runtime(
        change: Callable[[list[StagedFile], Runtime], tuple[list[StagedFile], Runtime]]) -> None:
    files, runtime = change(BASE, RUNTIME)
    assert key(files, runtime) != key(BASE)


def test_extra_packages_are_forced_first_then_everything_resolves_in_one_run() -> None:
    files = [f(mf.REQUIREMENTS), f("x-req.txt", role=Role.PIP_REQUIREMENTS),
             f(mf.EXTRA_PACKAGES), f("b-1.0.tar.gz"), f("a-2.0-py3-none-any.whl"),
             f(mf.WORKFLOW)]
    steps = install_steps(make_plan(files, RUNTIME),
                          "b-1.0.tar.gz\n\n  a-2.0-py3-none-any.whl  \nb-1.0.tar.gz\n")
    extras = ("b-1.0.tar.gz", "a-2.0-py3-none-any.whl")
    assert steps == [
        InstallStep(StepKind.FORCE_EXTRA, extras),
        InstallStep(StepKind.INSTALL, extras + (mf.WORKFLOW,), (mf.REQUIREMENTS, "x-req.txt")),
    ]
    assert steps[0].describe() == "extra packages b-1.0.tar.gz, a-2.0-py3-none-any.whl"
    assert steps[1].describe() == ("requirements from requirements.txt, x-req.txt and packages "
                                   "b-1.0.tar.gz, a-2.0-py3-none-any.whl, workflow.tar.gz")


def test_requirements_alone_are_one_run() -> None:
    assert install_steps(make_plan([f(mf.REQUIREMENTS)], RUNTIME), None) == [
        InstallStep(StepKind.INSTALL, (), (mf.REQUIREMENTS,))]


def test_workflow_alone_is_one_plain_install() -> None:
    assert install_steps(make_plan([f(mf.WORKFLOW)], RUNTIME), None) == [
        InstallStep(StepKind.INSTALL, (mf.WORKFLOW,))]


@pytest.mark.parametrize("text, fragment", [
    ("missing-1.0.tar.gz\n", "line 1 names 'missing-1.0.tar.gz', which the job did not stage"),
    ("ok-1.0.tar.gz\n../../etc/passwd\n", "line 2: file name '../../etc/passwd'"),
], ids=["not-staged", "unsafe"])
def test_bad_extra_packages_lines_are_refused(text: str, fragment: str) -> None:
    plan = make_plan([f(mf.EXTRA_PACKAGES), f("ok-1.0.tar.gz")], RUNTIME)
    with pytest.raises(BadArtifactError) as err:
        install_steps(plan, text)
    assert fragment in str(err.value)


def test_unreadable_extra_packages_is_refused() -> None:
    with pytest.raises(BadArtifactError, match="could not be read"):
        install_steps(make_plan([f(mf.EXTRA_PACKAGES)], RUNTIME), None)
