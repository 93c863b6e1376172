"""``mixq`` entry point: subcommands, common options, exit codes, the output guard.

Each subcommand lives in its own module under ``mixq.cli`` with ``register(subparsers,
common)`` (adds its parser, inheriting the ``common`` options, and sets ``handler``, and
where it writes files ``outputs``: ``(args) -> paths``) and a handler ``(args) -> int``.
Every command gets its own copy of the common options, so each one's ``--output`` default
is its own (``set_defaults`` on a shared parent action would change every command's).

Before a handler runs, every file it will write is checked (:func:`check_outputs`): a
writable destination that is not one of the command's input files. Exit codes: 0 success,
1 a mixq error (bad input, named in the message), 2 usage error (argparse), 130
interrupted by SIGINT (Ctrl-C), 143 stopped by SIGTERM; an interrupted command leaves no
half-written file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from mixq import __version__
from mixq.cli._common import check_outputs, positive_int, resolve_device
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
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, what a shell reports for a SIGTERM'd job

log = logging.getLogger("mixq")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it unwinds like Ctrl-C: every
    ``atomic_write`` in flight removes its temporary."""


def common_options(*, torch_device: bool = True) -> argparse.ArgumentParser:
    """Options every subcommand takes: output, verbosity, threads, device (not ``cost``,
    whose ``--device`` is the FPGA)."""
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
    parent.add_argument(
        "--threads", type=positive_int, help="CPU threads torch may use (default: torch's choice)"
    )
    if torch_device:
        parent.add_argument(
            "--device",
            dest="torch_device",
            metavar="DEVICE",
            default="cpu",
            help="where the model runs: cpu (default), cuda, cuda:1, mps; the integer "
            "engines and exports run on the CPU",
        )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixq",
        description="Row-wise mixed-scheme, multi-precision quantisation for PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"mixq {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        common = common_options(torch_device=getattr(module, "TORCH_DEVICE_OPTION", True))
        module.register(subparsers, common)
    for name, sub in subparsers.choices.items():
        _describe_output_default(name, sub)
    return parser


# Commands without a default output folder: what they do without -o.
NO_OUTPUT_DEFAULT = {"export": "beside the checkpoint"}


def _describe_output_default(command: str, parser: argparse.ArgumentParser) -> None:
    default = parser.get_default("output")
    where = NO_OUTPUT_DEFAULT.get(command, "none: nothing is written without -o")
    for action in parser._actions:
        if action.dest == "output":
            action.help = f"folder for the files the command writes (default: {default or where})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help/--version (0) and bad usage (2)
        return int(exc.code or 0)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_USAGE
    args.argv = list(sys.argv[1:] if argv is None else argv)
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    try:
        with _sigterm_as_interrupt(), _threads(args.threads):
            resolve_device(getattr(args, "torch_device", "cpu"))
            outputs = getattr(args, "outputs", None)
            if outputs is not None:
                check_outputs(_input_paths(args), outputs(args))
            return int(args.handler(args) or 0)
    except MixqError as exc:
        log.error("error: %s", exc)
        return EXIT_ERROR
    except Terminated:
        log.error("interrupted (SIGTERM)")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED


def _input_paths(args: argparse.Namespace) -> list[Path]:
    """Every path option of the command except ``--output``: what it may read."""
    found: list[Path] = []
    for name, value in vars(args).items():
        if name == "output":
            continue
        values = value if isinstance(value, list | tuple) else [value]
        found += [v for v in values if isinstance(v, Path)]
    for name in ("recipe", "device"):  # options that are names or files
        value = getattr(args, name, None)
        if isinstance(value, str) and Path(value).is_file():
            found.append(Path(value))
    return found


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    try:
        previous: Any = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def entry_point() -> None:
    sys.exit(main())
