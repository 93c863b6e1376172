"""Pieces several subcommands share: option types, data options, loading a checkpoint."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from mixq.checkpoint import load_quantized, read_header
from mixq.cli._zoo import MODELS, ModelSpec, get_model, load_float_weights
from mixq.errors import CheckpointError

QUANTIZED_NAME = "quantized.safetensors"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_model_option(parser: argparse.ArgumentParser, *, required: bool) -> None:
    help_text = "a built-in model" + ("" if required else " (default: the checkpoint's own)")
    parser.add_argument("--model", choices=sorted(MODELS), required=required, help=help_text)


def add_data_options(parser: argparse.ArgumentParser, *, batch_size: int = 128) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the data set's folder (default: ../shared/data/cifar10-jpeg for the ResNets; "
        "for Fashion-MNIST /usr/share/datasets/fashion-mnist, else ~/.cache/mixq, downloaded)",
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


def load_model(path: Path, model_name: str | None) -> LoadedModel:
    """A quantised checkpoint (``.safetensors``) or float weights (``--model`` needed)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        extra = dict(read_header(path).get("extra") or {})
        name = model_name or extra.get("model")
        if name is None:
            raise CheckpointError(f"{path} records no model name; pass --model")
        spec = get_model(str(name))
        return LoadedModel(load_quantized(spec.build(), path), spec, True, extra)
    if model_name is None:
        raise CheckpointError(f"{path} holds float weights: pass --model to say whose")
    spec = get_model(model_name)
    return LoadedModel(load_float_weights(spec.build(), path), spec, False)
