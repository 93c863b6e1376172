"""Saving and loading quantised models: safetensors tensors plus a JSON header.

The file holds the quantised model's state (weights, clip levels, row codes) and, in its
header, the structure to rebuild: which layers were swapped, with what candidates and
activation bits, and which BatchNorm each conv absorbed. Loading applies that structure to
a fresh float model of the same architecture and loads the state strictly.

The header carries ``checksum``: a SHA-256 of the header and of every tensor's bytes, so a
file with a flipped byte is refused with :class:`CheckpointError`. Files written before
checksums existed (no ``checksum`` entry) still load, with an
:class:`~mixq.errors.UncheckedCheckpointWarning`: they were written by mixq, and refusing
them would strand every earlier result. Every header value (layer entries, activation
state) is checked before it is used. A model with a NaN or Inf is never saved.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mixq.assignment import RowAssignment
from mixq.errors import (
    CheckpointError,
    MixqError,
    NonFiniteWeightError,
    UncheckedCheckpointWarning,
)
from mixq.io import atomic_write
from mixq.jsonfile import parse_metadata_header
from mixq.nn.act_quant import ACT_BITS_RANGE, ActQuantizer, CalibrationMethod
from mixq.nn.layers import QUANT_LAYERS, QuantConv2d, QuantLinear
from mixq.swap import set_submodule

FORMAT_NAME = "mixq.quantized-model"
FORMAT_VERSION = 1
_HEADER_KEY = "mixq"


def save_quantized(
    model: nn.Module, path: str | Path, *, extra: dict[str, Any] | None = None
) -> None:
    """Write ``model`` to ``path`` (a temporary file, then a rename: never half-written).

    Refuses (:class:`~mixq.errors.NonFiniteWeightError`) a model with a NaN or Inf.
    """
    state = model.state_dict()
    require_finite_state(state, str(path))
    tensors = {
        k: v.detach().cpu().clone().contiguous() for k, v in state.items() if torch.is_tensor(v)
    }
    header: dict[str, Any] = {
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
    header["checksum"] = checksum(header, tensors)
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
    _verify_checksum(path, header, tensors)
    target = copy.deepcopy(model)
    for entry in header["layers"]:
        _rebuild_layer(target, entry, path)
    _check_act_states(path, target, header["extra_state"])
    tensors.update(header["extra_state"])
    try:
        target.load_state_dict(tensors, strict=True)
    except (RuntimeError, MixqError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} does not match the model: {exc}") from None
    return target


def checksum(header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """``"sha256:<hex>"`` of the header (less its ``checksum``) and every tensor's bytes."""
    digest = hashlib.sha256()
    body = {k: v for k, v in header.items() if k != "checksum"}
    digest.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        # As raw bytes, so every dtype (bfloat16 and bool too) is covered.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def require_finite_state(state: Mapping[str, Any], destination: str) -> None:
    """Refuse to save a state holding NaN or Inf in any floating-point tensor."""
    for name, tensor in state.items():
        floating = torch.is_tensor(tensor) and tensor.is_floating_point()
        if floating and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteWeightError(f"not saving {destination}: {name} holds NaN or Inf values")


def _verify_checksum(path: str | Path, header: dict[str, Any], tensors: dict[str, Any]) -> None:
    expected = header.get("checksum")
    if expected is None:
        warnings.warn(
            f"{path} has no checksum (written by an older mixq): its tensors are not verified; "
            "save it again to add one",
            UncheckedCheckpointWarning,
            stacklevel=3,
        )
        return
    if expected != checksum(header, tensors):
        raise CheckpointError(
            f"{path} is corrupt: its checksum does not match its contents "
            "(a tensor or the header was changed after saving)"
        )


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def _parse_header(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    what = "mixq quantised model"
    header = parse_metadata_header(path, metadata, _HEADER_KEY, FORMAT_NAME, what, CheckpointError)
    if header.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {header.get('version')} is not supported "
            f"(this mixq reads version {FORMAT_VERSION})"
        )
    _check_header(path, header)
    return header


_LAYER_KEYS = {"name", "kind", "bn", "candidates", "act_bits"}
_ACT_STATE_KEYS = {"bits", "signed", "method"}


def _check_header(path: Path, header: dict[str, Any]) -> None:
    """Every header value used by :func:`load_quantized`, checked before any is used."""
    for key, kind in (("layers", list), ("extra_state", dict), ("extra", dict)):
        if not isinstance(header.get(key), kind):
            raise CheckpointError(
                f"{path}: header entry {key!r} is missing or not a {kind.__name__}"
            )
    if "checksum" in header and not isinstance(header["checksum"], str):
        raise CheckpointError(f"{path}: header checksum is not a string")
    for entry in header["layers"]:
        _check_layer_entry(path, entry)


def _check_layer_entry(path: Path, entry: Any) -> None:
    low, high = ACT_BITS_RANGE
    problem = None
    if not isinstance(entry, dict) or set(entry) != _LAYER_KEYS:
        problem = f"needs exactly the keys {sorted(_LAYER_KEYS)}"
    elif not isinstance(entry["name"], str):
        problem = "name is not a string"
    elif entry["kind"] not in ("conv2d", "linear"):
        problem = f"kind must be 'conv2d' or 'linear', got {entry['kind']!r}"
    elif entry["bn"] is not None and not isinstance(entry["bn"], str):
        problem = "bn is neither null nor a module name"
    elif not (
        isinstance(entry["candidates"], list)
        and entry["candidates"]
        and all(isinstance(c, str) for c in entry["candidates"])
    ):
        problem = "candidates must be a non-empty list of names"
    elif not _is_act_bits(entry["act_bits"], allow_float=True):
        problem = f"act_bits must be 0 or an integer in {low}..{high}, got {entry['act_bits']!r}"
    if problem is not None:
        raise CheckpointError(f"{path}: layer entry {entry!r}: {problem}")


def _check_act_states(path: str | Path, model: nn.Module, extra_state: dict[str, Any]) -> None:
    modules = dict(model.named_modules())
    for key, state in extra_state.items():
        owner = modules.get(key.removesuffix("._extra_state").removesuffix("_extra_state"))
        if isinstance(owner, ActQuantizer):
            _check_act_state(path, key, state)
    for name, module in modules.items():
        key = f"{name}._extra_state" if name else "_extra_state"
        if isinstance(module, ActQuantizer) and key not in extra_state:
            raise CheckpointError(f"{path}: no activation state for {name!r} in the header")


def _check_act_state(path: str | Path, key: str, state: Any) -> None:
    """An activation quantiser's state, against the values ActQuantizer accepts."""
    low, high = ACT_BITS_RANGE
    methods = get_args(CalibrationMethod)
    where = f"{path}: activation state {key!r}"
    if not isinstance(state, dict) or set(state) != _ACT_STATE_KEYS:
        raise CheckpointError(f"{where} needs exactly the keys {sorted(_ACT_STATE_KEYS)}")
    if not _is_act_bits(state["bits"], allow_float=False):
        raise CheckpointError(
            f"{where}: bits must be an integer in {low}..{high}, got {state['bits']!r}"
        )
    if state["signed"] is not None and not isinstance(state["signed"], bool):
        raise CheckpointError(
            f"{where}: signed must be true, false or null, got {state['signed']!r}"
        )
    if state["method"] not in methods:
        raise CheckpointError(
            f"{where}: method must be one of {', '.join(methods)}, got {state['method']!r}"
        )


def _is_act_bits(value: Any, *, allow_float: bool) -> bool:
    low, high = ACT_BITS_RANGE
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return low <= value <= high or (allow_float and value == 0)


def _layer_entry(name: str, layer: QuantConv2d | QuantLinear) -> dict[str, Any]:
    act = layer.act_quant
    return {
        "name": name,
        "kind": "conv2d" if isinstance(layer, QuantConv2d) else "linear",
        "bn": getattr(layer, "folded_bn_name", None),
        "candidates": [str(c) for c in layer.weight_quant.candidates],
        "act_bits": act.bits if act is not None else 0,
    }


def _folded_batchnorm(model: nn.Module, name: str | None) -> nn.BatchNorm2d | None:
    if not name:
        return None
    bn = model.get_submodule(name)
    if not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"{name!r} is a {type(bn).__name__}, not a BatchNorm2d")
    return bn


def _rebuild_layer(model: nn.Module, entry: dict[str, Any], path: str | Path) -> None:
    try:
        name = entry["name"]
        float_layer = model.get_submodule(name)
        bn = _folded_batchnorm(model, entry["bn"])
        placeholder = RowAssignment(
            tuple(entry["candidates"]),
            np.zeros(float_layer.get_parameter("weight").shape[0], dtype=np.int64),
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
