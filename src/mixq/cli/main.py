"""``mixq`` entry point: subcommands, common options, exit codes.

Each subcommand lives in its own module under ``mixq.cli`` with ``register(subparsers,
common)`` (adds its parser, inheriting the ``common`` options, and sets ``handler``) and a
handler ``(args) -> int``. Exit codes: 0 success, 1 a mixq error (bad input, named in the
message), 2 usage error (argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mixq import __version__
from mixq.errors import MixqError

# Subcommand modules, in the order --help lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "mixq.cli.demo",
    "mixq.cli.sensitivity",
    "mixq.cli.allocate",
    "mixq.cli.quantize",
    "mixq.cli.train",
    "mixq.cli.eval",
    "mixq.cli.export",
    "mixq.cli.report",
    "mixq.cli.cost",
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

log = logging.getLogger("mixq")


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand takes: ``--output``, ``--quiet``, ``--verbose``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--output",
        "-o",
        metavar="DIR",
        default=None,
        help="folder for the files the command writes",
    )
    noise = parent.add_mutually_exclusive_group()
    noise.add_argument(
        "--quiet", "-q", action="store_true", help="print only results and errors; no progress bars"
    )
    noise.add_argument("--verbose", "-v", action="store_true", help="print debug details")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixq",
        description="Row-wise mixed-scheme, multi-precision quantisation for PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"mixq {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_options()
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help/--version (0) and bad usage (2)
        return int(exc.code or 0)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_USAGE
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    try:
        return int(args.handler(args) or 0)
    except MixqError as exc:
        log.error("error: %s", exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED


def entry_point() -> None:
    sys.exit(main())
