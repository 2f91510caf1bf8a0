"""DepsSettings and parse_size: every problem reported at once, naming the flag."""

from __future__ import annotations

import pytest

from harness_pool._errors import ConfigError
from harness_pool.deps.settings import CACHE_DIR_ENV, DEFAULT_CACHE_DIR, DepsSettings, parse_size


@pytest.mark.parametrize("text, size", [
    ("1048576", 1048576), ("512Mi", 512 * 2**20), ("2Gi", 2 * 2**30), ("1G", 10**9),
    ("1.5Gi", int(1.5 * 2**30)), ("10k", 10_000), ("64MiB", 64 * 2**20), (" 3 Ti ", 3 * 2**40),
], ids=["bytes", "mebi", "gibi", "giga", "fraction", "kilo", "with-B", "spaces"])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1Gi", "1Pi", "2 GB extra"])
def test_parse_size_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_defaults_are_valid() -> None:
    settings = DepsSettings().validate()
    assert settings.max_bytes == 2 * 2**30
    assert DepsSettings(cache_size=0).max_bytes is None


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        DepsSettings(cache_dir="cache", cache_size=-1, pip_timeout=0, prepare_timeout=10,
                     call_timeout=-5).validate()
    assert err.value.problems == [
        "--env-cache-dir: 'cache' must be an absolute path",
        "--env-cache-size: -1 must be 0 (unbounded) or a positive number of bytes",
        "--pip-timeout: 0 must be a positive number of seconds",
        "--artifact-call-timeout: -5 must be a positive number of seconds",
    ]


def test_a_pip_timeout_above_the_prepare_timeout_is_refused() -> None:
    with pytest.raises(ConfigError, match="--pip-timeout: 700.0 is above --prepare-timeout"):
        DepsSettings(pip_timeout=700.0, prepare_timeout=600.0).validate()


def test_the_cache_folder_defaults_to_the_environment_then_the_pod_volume(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from harness_pool.cli import build_parser
    from harness_pool.sidecar.cli import settings_from_args

    monkeypatch.setenv(CACHE_DIR_ENV, "/scratch/cache")
    assert DepsSettings().cache_dir == "/scratch/cache"
    assert settings_from_args(build_parser().parse_args(["serve"])).deps.cache_dir == \
        "/scratch/cache"
    flag = ["serve", "--env-cache-dir", "/mnt/envs"]
    assert settings_from_args(build_parser().parse_args(flag)).deps.cache_dir == "/mnt/envs"
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert DepsSettings().cache_dir == DEFAULT_CACHE_DIR == "/var/cache/harness-pool"
