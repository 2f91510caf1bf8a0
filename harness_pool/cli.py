"""The ``harness-pool`` command: a thin router to each package's subcommands.

Beam's SDK container form (``harness-pool --worker_pool``, what manifests give
``apache/beam_python3.x_sdk``) is translated to ``serve`` first (``compat``).

Each package that has commands exposes ``register(subparsers)``, which adds
its subcommands and sets ``func`` on each; ``func(args) -> int`` is the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from harness_pool import __version__, _logging, compat

# Packages whose ``cli`` module registers subcommands, in --help order.
_COMMAND_MODULES = (
    "harness_pool.sidecar.cli",  # serve, status, worker
    "harness_pool.demo",  # demo
    "harness_pool.scheduler.cli",  # scheduler, savepoints
    "harness_pool.flink.cli",  # flink-cluster
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness-pool",
        description=(
            "Warm, isolated Beam SDK workers for Flink TaskManagers (sidecar + pool), "
            "and savepoint-safe job cycles on Flink (scheduler)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"harness-pool {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default: INFO)"
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text",
        help="text for people, json for log collectors (default: text)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    beam_form = compat.resolve(argv) if compat.is_beam_boot_form(argv) else None
    if isinstance(beam_form, int):
        return beam_form
    parser = build_parser()
    args = parser.parse_args(beam_form.argv if beam_form else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _logging.configure(args.log_level, args.log_format)
    if beam_form:
        compat.log_translation(beam_form)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
