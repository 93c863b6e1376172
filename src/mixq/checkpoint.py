"""Saving and loading quantised models: safetensors tensors plus a JSON header.

The file holds the quantised model's state (weights, clip levels, row codes) and, in its
header, the structure to rebuild: which layers were swapped, with what candidates and
activation bits, and which BatchNorm each conv absorbed. Loading applies that structure to
a fresh float model of the same architecture and loads the state strictly.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mixq.assignment import RowAssignment
from mixq.convert import set_submodule
from mixq.errors import CheckpointError, MixqError
from mixq.io import atomic_write
from mixq.nn.layers import QUANT_LAYERS, QuantConv2d, QuantLinear

FORMAT_NAME = "mixq.quantized-model"
FORMAT_VERSION = 1
_HEADER_KEY = "mixq"


def save_quantized(
    model: nn.Module, path: str | Path, *, extra: dict[str, Any] | None = None
) -> None:
    """Write ``model`` to ``path`` (a temporary file, then a rename: never half-written)."""
    state = model.state_dict()
    tensors = {
        k: v.detach().cpu().clone().contiguous() for k, v in state.items() if torch.is_tensor(v)
    }
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "layers": [
            _layer_entry(name, m)
            for name, m in model.named_modules()
            if isinstance(m, QUANT_LAYERS)
        ],
        "extra_state": {k: v for k, v in state.items() if not torch.is_tensor(v)},
        "extra": extra or {},
    }
    metadata = {_HEADER_KEY: json.dumps(header)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a saved model (raises :class:`CheckpointError` if unreadable)."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    return _parse_header(path, metadata)


def load_quantized(model: nn.Module, path: str | Path) -> nn.Module:
    """Rebuild the quantised model saved at ``path`` on a copy of float ``model``."""
    header = read_header(path)
    try:
        tensors: dict[str, Any] = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt ({exc})") from None
    target = copy.deepcopy(model)
    for entry in header["layers"]:
        _rebuild_layer(target, entry, path)
    tensors.update(header["extra_state"])
    try:
        target.load_state_dict(tensors, strict=True)
    except (RuntimeError, MixqError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} does not match the model: {exc}") from None
    return target


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def _parse_header(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    if _HEADER_KEY not in metadata:
        raise CheckpointError(f"{path} is not a mixq quantised model (no '{_HEADER_KEY}' header)")
    try:
        header = json.loads(metadata[_HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: header is not valid JSON ({exc})") from None
    if header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: unknown format {header.get('format')!r}")
    if header.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {header.get('version')} is not supported "
            f"(this mixq reads version {FORMAT_VERSION})"
        )
    return header


def _layer_entry(name: str, layer: nn.Module) -> dict[str, Any]:
    act = layer.act_quant
    return {
        "name": name,
        "kind": "conv2d" if isinstance(layer, QuantConv2d) else "linear",
        "bn": getattr(layer, "folded_bn_name", None),
        "candidates": [str(c) for c in layer.weight_quant.candidates],
        "act_bits": act.bits if act is not None else 0,
    }


def _rebuild_layer(model: nn.Module, entry: dict[str, Any], path: str | Path) -> None:
    try:
        name = entry["name"]
        float_layer = model.get_submodule(name)
        bn = model.get_submodule(entry["bn"]) if entry["bn"] else None
        placeholder = RowAssignment(
            tuple(entry["candidates"]), torch.zeros(float_layer.weight.shape[0], dtype=torch.int64)
        )
    except (AttributeError, KeyError, TypeError, MixqError) as exc:
        raise CheckpointError(
            f"{path}: layer entry {entry!r} does not fit the model: {exc}"
        ) from None
    if entry["kind"] == "conv2d" and isinstance(float_layer, nn.Conv2d):
        layer: nn.Module = QuantConv2d.from_float(
            float_layer, placeholder, bn=bn, act_bits=entry["act_bits"]
        )
    elif entry["kind"] == "linear" and isinstance(float_layer, nn.Linear):
        layer = QuantLinear.from_float(float_layer, placeholder, act_bits=entry["act_bits"])
    else:
        raise CheckpointError(
            f"{path}: layer {name!r} is a {type(float_layer).__name__} in the model but "
            f"{entry['kind']} in the checkpoint"
        )
    layer.folded_bn_name = entry["bn"]
    set_submodule(model, name, layer)
    if entry["bn"]:
        set_submodule(model, entry["bn"], nn.Identity())
