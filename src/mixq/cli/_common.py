"""Pieces several subcommands share: option types, data options, loading a checkpoint,
the output guard (never write over an input, check the destination before the work)."""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixq.checkpoint import load_quantized, read_header
from mixq.cli._zoo import MODELS, ModelSpec, get_model, is_user_model, load_float_weights
from mixq.errors import CheckpointError, MixqError, OutputError
from mixq.io import check_writable
from mixq.textfile import read_text

QUANTIZED_NAME = "quantized.safetensors"


def positive_int(text: str) -> int:
    return _at_least(_parse_int(text), 1)


def non_negative_int(text: str) -> int:
    return _at_least(_parse_int(text), 0)


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _at_least(value: int, low: int) -> int:
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (``inf`` and ``nan`` are refused: they train NaN models)."""
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def act_bits_type(text: str) -> int:
    """Activation bits as recipes take them: 0 (float) or 2 to 16."""
    from mixq.recipe import ACT_BITS_RANGE

    value = _parse_int(text)
    low, high = ACT_BITS_RANGE
    if not (value == 0 or low <= value <= high):
        raise argparse.ArgumentTypeError(
            f"activation bits must be 0 (float) or {low} to {high}, got {value}"
        )
    return value


@contextmanager
def quiet_unless_main(is_main: bool) -> Iterator[None]:
    """Under torchrun, rank 0 speaks for the run: the other ranks log warnings and errors
    only, until the command ends (the logger's level is then restored, so that a later
    command in the same process logs as usual).

    >>> log = logging.getLogger("mixq")
    >>> before = log.level
    >>> with quiet_unless_main(False):
    ...     log.level == logging.WARNING
    True
    >>> log.level == before
    True
    """
    log = logging.getLogger("mixq")
    previous = log.level
    if not is_main:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(previous)


def check_outputs(inputs: Iterable[Path], outputs: Iterable[Path]) -> None:
    """Raise :class:`OutputError` before any work if a file the command will write is one
    it reads, or cannot be written (see :func:`mixq.io.check_writable`)."""
    read = {path.resolve() for path in inputs}
    for path in outputs:
        if path.resolve() in read:
            raise OutputError(
                f"{path} is both an input and an output of this command: it would be "
                "overwritten; choose another --output"
            )
        check_writable(path)


class TextFileError(MixqError, ValueError):
    """A file given where text (YAML/JSON) is expected that is not text."""


def require_text_file(path: Path, what: str) -> Path:
    """``path`` if it is a UTF-8 text file, else a typed error naming ``what`` it should be
    (a checkpoint given as a plan, a binary file given as a YAML)."""
    read_text(path, what, TextFileError)
    return path


class DeviceChoiceError(MixqError, ValueError):
    """A ``--device`` that torch does not know or this machine does not have."""


def resolve_device(name: str) -> torch.device:
    """The torch device of ``--device``, checked to exist here."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceChoiceError(f"unknown --device {name!r}; e.g. cpu, cuda, cuda:1, mps") from None
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise DeviceChoiceError(f"--device {name}: no such CUDA device on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceChoiceError("--device mps: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceChoiceError(f"--device {name}: only cpu, cuda and mps are supported")
    return device


def add_command(
    subparsers: argparse._SubParsersAction,
    common: argparse.ArgumentParser,
    name: str,
    doc: str | None,
    *,
    help: str,
) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``: the shared options of ``common``, ``help`` in the
    command list, and the module docstring ``doc`` (its usage lines kept as written) in
    ``mixq <name> --help``."""
    return subparsers.add_parser(
        name,
        parents=[common],
        help=help,
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_model_option(parser: argparse.ArgumentParser, *, required: bool) -> None:
    help_text = (
        f"a built-in model ({', '.join(sorted(MODELS))}) or your own pkg.module:factory "
        "(with --data)" + ("" if required else "; default: the checkpoint's own")
    )
    parser.add_argument("--model", required=required, help=help_text)


def add_data_options(parser: argparse.ArgumentParser, *, batch_size: int = 128) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the data set's folder (default: ../shared/data/cifar10-jpeg for the ResNets; "
        "for Fashion-MNIST /usr/share/datasets/fashion-mnist, else ~/.cache/mixq, downloaded)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="your own data instead of the model's: a tensor file (.pt/.safetensors with "
        "inputs/labels), a CIFAR-10 python archive or a folder of class folders of images",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=batch_size, help="default %(default)s"
    )


@dataclass(frozen=True)
class LoadedModel:
    model: nn.Module
    spec: ModelSpec
    quantized: bool
    extra: dict[str, Any] = field(default_factory=dict)  # a quantised checkpoint's record

    @property
    def method(self) -> str:
        """The label of what produced the model: a preset, a recipe file, or fp32."""
        return str(self.extra.get("method", "quantized")) if self.quantized else "fp32"


def load_model(
    path: Path,
    model_name: str | None,
    device: str | torch.device = "cpu",
    data: Path | None = None,
) -> LoadedModel:
    """A quantised checkpoint (``.safetensors``) or float weights (``--model`` needed),
    on ``device``, with its data (``data``: the user's, else the model's own)."""
    loaded = _load_model(path, model_name)
    loaded.model.to(resolve_device(str(device)))
    if data is not None:
        loaded = LoadedModel(
            loaded.model, loaded.spec.with_data(data), loaded.quantized, loaded.extra
        )
    return loaded


def _load_model(path: Path, model_name: str | None) -> LoadedModel:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        extra = dict(read_header(path).get("extra") or {})
        name = model_name or extra.get("model")
        if name is None:
            raise CheckpointError(f"{path} records no model name; pass --model")
        if model_name is None and is_user_model(str(name)):
            raise CheckpointError(
                f"{path} was made from your model {name}; pass --model {name} to import it "
                "(mixq never imports code that a file names)"
            )
        spec = get_model(str(name))
        return LoadedModel(load_quantized(spec.build(), path), spec, True, extra)
    if model_name is None:
        raise CheckpointError(f"{path} holds float weights: pass --model to say whose")
    spec = get_model(model_name)
    return LoadedModel(load_float_weights(spec.build(), path), spec, False)
