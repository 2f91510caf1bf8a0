"""Beam's SDK container command line (``--worker_pool``) as a drop-in for ``serve``.

Manifests that run Beam's Python SDK container as a worker pool give it the
arguments ``["--worker_pool"]``: its boot program (``boot.go``) then runs
``apache_beam.runners.worker.worker_pool_main --service_port=50000`` on every
interface, one cold process per ``StartWorker``. With this module the
harness-pool image accepts the same arguments and runs ``serve`` on the same
port with a warm pool instead, so switching is a change of image only.

The translation is pure (argv and environment in, ``serve`` argv out) and
follows the boot program's flag syntax, Go's ``flag`` package: ``-name`` or
``--name``, ``-name=value``, ``-name value`` for non-boolean flags, booleans
as ``1 t T TRUE true True 0 f F FALSE false False``, parsing stops at the first
non-flag argument or after ``--``. Flags the boot defines but that mean nothing
to a worker pool (``--id``, the ``*_endpoint`` flags, ``--semi_persist_dir``)
are accepted and ignored, as the boot ignores them with ``--worker_pool``.
Anything else is an error naming the flag (exit status 2, like the boot).

What ``--worker_pool`` becomes (``serve_argv``)::

    serve --host 0.0.0.0 --port 50000 --flavor beam
          --metrics-port 9464 --metrics-host 0.0.0.0
          --env-cache-dir $TMPDIR/harness-pool-env-cache <HARNESS_POOL_SERVE_ARGS>

``--flavor beam`` in either image: Beam's container serves Beam pipelines, and
the pyflink flavour's operations cannot decode a plain Beam stage.
``--host 0.0.0.0`` keeps Beam's exposure (its pool listens on every interface,
and manifests probe it with ``tcpSocket: 50000`` at the pod IP); gRPC health
answers on the same port. ``HARNESS_POOL_SERVE_ARGS`` (shell words) is appended,
so any ``serve`` flag can be changed from the environment alone, e.g.
``--workers 8`` or ``--host 127.0.0.1``. harness-pool's own global options
(``--log-format json``) may precede the Beam flags.

The environment cache (job dependencies) goes under the temporary folder,
where Beam's boot keeps its semi-persistent directory (``/tmp``): manifests
written for Beam's container mount a writable ``/tmp`` and nothing at
``/var/cache/harness-pool`` (serve's default), and with a read-only root
filesystem the first job would otherwise fail to stage its artifacts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence

from harness_pool._errors import ConfigError

_LOG = logging.getLogger("harness_pool.compat")

#: Port and address of Beam's worker pool (boot.go passes --service_port=50000;
#: worker_pool_main binds every interface).
BEAM_POOL_PORT = 50000
BEAM_POOL_HOST = "0.0.0.0"
METRICS_PORT = 9464
SERVE_ARGS_ENV = "HARNESS_POOL_SERVE_ARGS"

#: Every flag of the Python SDK container's boot (Beam 2.x), by kind.
_BOOL_FLAGS = frozenset({"worker_pool", "setup_only"})
_IGNORED_IN_POOL_MODE = frozenset({
    "id", "logging_endpoint", "artifact_endpoint", "provision_endpoint", "control_endpoint",
    "semi_persist_dir",
})
_STRING_FLAGS = _IGNORED_IN_POOL_MODE | {"artifacts"}
_HELP = frozenset({"h", "help"})
BEAM_FLAGS = _BOOL_FLAGS | _STRING_FLAGS

#: harness-pool's global options that take a value (they may precede Beam's flags).
_GLOBAL_WITH_VALUE = frozenset({"--log-level", "--log-format"})

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

USAGE = f"""\
usage: harness-pool --worker_pool

Beam's SDK container form: serve Beam's BeamFnExternalWorkerPool on
{BEAM_POOL_HOST}:{BEAM_POOL_PORT} like apache/beam_python3.x_sdk --worker_pool, but with a
warm pool of SDK workers (harness-pool serve). Set {SERVE_ARGS_ENV} to change any
serve flag (e.g. "--workers 8"); see harness-pool serve --help.
"""


@dataclasses.dataclass(frozen=True)
class BootFlags:
    """What a Beam boot command line asked for."""

    worker_pool: bool = False
    setup_only: bool = False
    help: bool = False
    ignored: tuple[str, ...] = ()
    """Flags given that a worker pool does not use, in order (for the log)."""


def _flag_name(arg: str) -> str | None:
    """``worker_pool`` for ``-worker_pool``, ``--worker_pool=true``; None for a non-flag."""
    if arg in ("-", "--") or not arg.startswith("-"):
        return None
    body = arg[2:] if arg.startswith("--") else arg[1:]
    if body.startswith("-") or body.startswith("="):
        return None
    return body.split("=", 1)[0]


def _split_global(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(harness-pool global options at the front, the rest)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in _GLOBAL_WITH_VALUE:
            i += 1 if "=" in arg else 2
        else:
            break
    return list(argv[:i]), list(argv[i:])


def is_beam_boot_form(argv: Sequence[str]) -> bool:
    """True when the command line is Beam's boot form (its first flag is a boot flag)."""
    _, rest = _split_global(argv)
    return bool(rest) and _flag_name(rest[0]) in BEAM_FLAGS


def parse_boot_flags(args: Sequence[str]) -> BootFlags:
    """Parses Beam's boot flags the way Go's ``flag`` package does; all problems at once."""
    problems: list[str] = []
    values: dict[str, bool] = {"worker_pool": False, "setup_only": False, "help": False}
    ignored: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        name = _flag_name(arg)
        if name is None:
            break  # first positional argument: Go's flag package stops here
        has_value = "=" in arg
        value = arg.split("=", 1)[1] if has_value else None
        if name in _HELP:
            values["help"] = True
        elif name in _BOOL_FLAGS:
            if value is None or value in _TRUE:
                values[name] = True
            elif value in _FALSE:
                values[name] = False
            else:
                problems.append(f"invalid boolean value {value!r} for -{name}")
        elif name in _STRING_FLAGS:
            if not has_value:
                if i + 1 >= len(args):
                    problems.append(f"flag needs an argument: -{name}")
                i += 1
            ignored.append(f"--{name}")
        else:
            problems.append(f"flag provided but not defined: -{name}")
        i += 1
    if problems:
        raise ConfigError(problems)
    return BootFlags(values["worker_pool"], values["setup_only"], values["help"], tuple(ignored))


@dataclasses.dataclass(frozen=True)
class Translation:
    """``argv`` for ``harness-pool``; ``help``: print ``USAGE`` instead of running."""

    argv: list[str]
    ignored: tuple[str, ...] = ()
    help: bool = False


def env_cache_dir(env: Mapping[str, str]) -> str:
    """The environment cache of the ``--worker_pool`` form: under ``$TMPDIR`` (``/tmp``)."""
    return os.path.join(env.get("TMPDIR") or "/tmp", "harness-pool-env-cache")


def serve_argv(argv: Sequence[str], env: Mapping[str, str]) -> Translation:
    """The ``harness-pool`` command line that Beam's boot form ``argv`` stands for.

    Raises ``ConfigError`` for a form this image cannot stand in for, naming it.
    """
    global_opts, rest = _split_global(argv)
    flags = parse_boot_flags(rest)
    if flags.help:
        return Translation([], help=True)
    if flags.setup_only:
        raise ConfigError(
            "--setup_only: not supported; this image installs nothing at start-up. Build an "
            "image FROM it with the job's dependencies instead (docs/kubernetes.md)")
    if not flags.worker_pool:
        raise ConfigError(
            "Beam's single-harness form (--id, --provision_endpoint, ...) is the SDK "
            "container's own boot; this image stands in for --worker_pool only. Keep "
            "apache/beam_python3.x_sdk for those containers (fixed-endpoint mode, "
            "docs/fixed-endpoint.md)")
    extra = env.get(SERVE_ARGS_ENV, "")
    try:
        extra_args = shlex.split(extra)
    except ValueError as exc:
        raise ConfigError(f"{SERVE_ARGS_ENV}: {exc} in {extra!r}") from exc
    return Translation([
        *global_opts, "serve",
        "--host", BEAM_POOL_HOST, "--port", str(BEAM_POOL_PORT),
        "--flavor", "beam",
        "--metrics-port", str(METRICS_PORT), "--metrics-host", "0.0.0.0",
        "--env-cache-dir", env_cache_dir(env),
        *extra_args,
    ], flags.ignored)


# -- thin shell for cli.main ---------------------------------------------------------


def resolve(argv: Sequence[str]) -> Translation | int:
    """``Translation`` of Beam's boot form, or the exit status after printing why not."""
    try:
        translation = serve_argv(argv, os.environ)
    except ConfigError as exc:
        sep = " " if len(exc.problems) == 1 else "\n"
        print(f"harness-pool:{sep}{exc}\n\n{USAGE}", file=sys.stderr)
        return 2
    if translation.help:
        print(USAGE)
        return 0
    return translation


def log_translation(translation: Translation) -> None:
    """One line that says what Beam's form became (after logging is configured)."""
    _LOG.info("Beam --worker_pool form: running harness-pool %s%s",
              shlex.join(translation.argv),
              f" (ignoring {', '.join(translation.ignored)}, unused by a worker pool)"
              if translation.ignored else "")
