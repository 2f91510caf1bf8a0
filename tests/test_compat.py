"""Beam's SDK container command line (``--worker_pool``) translated to ``serve``.

Pure translation cases are table-driven; one test runs the real command in
Beam's form with a real Beam pipeline (PortableRunner, EXTERNAL environment)
through it. The same form inside the built image: tests/k8s/test_image.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness_pool import compat
from harness_pool._errors import ConfigError
from harness_pool.cli import build_parser
from harness_pool.sidecar.cli import fetch_status, settings_from_args
from tests import shapes
from tests.k8s.helpers import SERVING, free_port, probe, wait_for
from tests.sidecar.beam_helpers import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv", [
    ["--worker_pool"],
    ["-worker_pool"],
    ["--worker_pool=true"],
    ["-worker_pool=1"],
    ["--worker_pool=T"],
    ["--worker_pool", "--id=ignored", "--semi_persist_dir", "/tmp"],
    ["--id", "x", "--worker_pool"],
    ["--worker_pool", "positional", "--not-a-flag-after-a-positional"],
    ["--worker_pool", "--", "--bogus"],
], ids=lambda a: " ".join(a))
def test_beam_forms_become_serve_on_beams_port(argv: list[str]) -> None:
    assert compat.is_beam_boot_form(argv)
    t = compat.serve_argv(argv, {})
    s = settings_from_args(build_parser().parse_args(t.argv)).validate()
    assert (s.host, s.port, s.flavor) == ("0.0.0.0", 50000, "beam")
    assert s.health_port == 0, "health on the pool's port, where Beam's manifests probe"
    assert s.metrics_port == compat.METRICS_PORT and s.metrics_host == "0.0.0.0"
    # Beam's manifests mount a writable /tmp only (semi_persist_dir): the cache goes there
    assert s.deps.cache_dir == "/tmp/harness-pool-env-cache"


def test_the_env_cache_follows_tmpdir_and_serve_args_may_move_it() -> None:
    t = compat.serve_argv(["--worker_pool"], {"TMPDIR": "/scratch"})
    assert settings_from_args(build_parser().parse_args(t.argv)).deps.cache_dir == \
        "/scratch/harness-pool-env-cache"
    env = {compat.SERVE_ARGS_ENV: "--env-cache-dir /var/cache/harness-pool"}
    t = compat.serve_argv(["--worker_pool"], env)
    assert settings_from_args(build_parser().parse_args(t.argv)).deps.cache_dir == \
        "/var/cache/harness-pool"


def test_ignored_flags_are_reported() -> None:
    t = compat.serve_argv(["--worker_pool", "--id=1", "-control_endpoint", "x:1"], {})
    assert t.ignored == ("--id", "--control_endpoint")


def test_global_options_may_precede_and_env_args_override() -> None:
    argv = ["--log-format=json", "--log-level", "DEBUG", "--worker_pool"]
    assert compat.is_beam_boot_form(argv)
    env = {compat.SERVE_ARGS_ENV: "--workers 8 --host 127.0.0.1 --spawn exec --flavor pyflink"}
    t = compat.serve_argv(argv, env)
    args = build_parser().parse_args(t.argv)
    assert (args.log_format, args.log_level) == ("json", "DEBUG")
    s = settings_from_args(args).validate()
    assert (s.workers, s.host, s.spawn, s.flavor) == (8, "127.0.0.1", "exec", "pyflink")


@pytest.mark.parametrize("argv", [
    [], ["serve"], ["--version"], ["-h"], ["--log-level", "DEBUG", "serve"], ["status"],
    ["--log-format=json"], ["worker_pool"],
], ids=lambda a: " ".join(a) or "empty")
def test_harness_pool_forms_are_left_alone(argv: list[str]) -> None:
    assert not compat.is_beam_boot_form(argv)


@pytest.mark.parametrize(("argv", "env", "expected"), [
    (["--worker_pool=maybe"], {}, "invalid boolean value 'maybe' for -worker_pool"),
    (["--worker_pool", "--workers=8"], {}, "flag provided but not defined: -workers"),
    (["--worker_pool", "--id"], {}, "flag needs an argument: -id"),
    (["--worker_pool=false"], {}, "stands in for --worker_pool only"),
    (["--id=1", "--provision_endpoint=localhost:1"], {}, "single-harness form"),
    (["--setup_only", "--artifacts=/a.json"], {}, "--setup_only: not supported"),
    (["--worker_pool"], {compat.SERVE_ARGS_ENV: '--host "0.0.0.0'}, compat.SERVE_ARGS_ENV),
], ids=["bad-bool", "undefined", "missing-value", "pool-false", "harness-form", "setup-only",
        "bad-env"])
def test_unsupported_forms_name_the_problem(argv: list[str], env: dict[str, str],
                                            expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        compat.serve_argv(argv, env)
    assert expected in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        compat.serve_argv(["--worker_pool=maybe", "--foo", "--bar=1"], {})
    assert len(err.value.problems) == 3


def _hp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness_pool", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_cli_exit_status_and_help_in_beams_form() -> None:
    bad = _hp("--worker_pool", "--bogus")
    assert bad.returncode == 2 and "flag provided but not defined: -bogus" in bad.stderr
    helped = _hp("--worker_pool", "-h")
    assert helped.returncode == 0 and "usage: harness-pool --worker_pool" in helped.stdout


@pytest.mark.slow
def test_worker_pool_form_serves_a_real_beam_pipeline(tmp_path: Path) -> None:
    """``harness-pool --worker_pool`` (ports moved by HARNESS_POOL_SERVE_ARGS, as an
    operator would) serves a PortableRunner pipeline from warm workers."""
    port, metrics = free_port(), free_port()
    env = {**os.environ, compat.SERVE_ARGS_ENV:
           f"--host 127.0.0.1 --port {port} --metrics-port {metrics} --workers 2",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    log = open(tmp_path / "pool.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "harness_pool", "--worker_pool", "--id=x"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    address = f"127.0.0.1:{port}"
    try:
        wait_for(lambda: probe(address, "") == SERVING, 90, "the pool warm")
        run(address, shapes.word_count, runner="portable")
        status = fetch_status(address)
        assert status.assignments, "no stage was assigned to a pooled worker"
        assert status.target_idle == 2
    finally:
        proc.terminate()
        rc = proc.wait(timeout=60)
        log.close()
    text = (tmp_path / "pool.log").read_text()
    assert rc == 0, text[-3000:]
    assert "Beam --worker_pool form: running harness-pool serve --host 0.0.0.0 --port 50000" \
        in text and "ignoring --id" in text, text[-3000:]
