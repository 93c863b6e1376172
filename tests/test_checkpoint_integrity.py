"""Quantised checkpoints: a checksum over every tensor, headers checked before use, and no
NaN model saved."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import mixq
from mixq.checkpoint import checksum
from mixq.errors import CheckpointError, NonFiniteWeightError, UncheckedCheckpointWarning


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def _saved(tmp_path: Path) -> tuple[nn.Module, Path]:
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(0))
    q = mixq.quantize(_mlp(), "fixed8", calibration_data=[x], progress=False)
    path = tmp_path / "q.safetensors"
    mixq.save_quantized(q, path)
    return q, path


def _rewrite(path: Path, edit: Callable[[dict[str, Any]], None], *, rehash: bool) -> None:
    """Edit the header as a person would; ``rehash`` keeps the checksum consistent, else
    it is dropped (a file from before checksums)."""
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["mixq"])
    tensors = load_file(str(path))
    edit(header)
    header.pop("checksum", None)
    if rehash:
        header["checksum"] = checksum(header, tensors)
    save_file(tensors, str(path), metadata={"mixq": json.dumps(header)})


def test_the_header_holds_a_checksum_of_every_tensor(tmp_path: Path) -> None:
    q, path = _saved(tmp_path)
    header = mixq.checkpoint.read_header(path)
    assert header["checksum"] == checksum(header, load_file(str(path)))
    assert header["checksum"].startswith("sha256:") and len(header["checksum"]) == 71
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = mixq.load_quantized(_mlp(), path)
    x = torch.randn(4, 6)
    assert torch.equal(loaded(x), q(x))


def test_a_flipped_tensor_byte_is_refused(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # the last bytes are tensor data, after the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum does not match"):
        mixq.load_quantized(_mlp(), path)


def test_an_edited_header_is_refused_by_the_checksum(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["mixq"])
    header["extra"] = {"edited": True}
    save_file(load_file(str(path)), str(path), metadata={"mixq": json.dumps(header)})
    with pytest.raises(CheckpointError, match="checksum does not match"):
        mixq.load_quantized(_mlp(), path)


def test_a_file_without_checksum_loads_with_a_warning(tmp_path: Path) -> None:
    q, path = _saved(tmp_path)
    _rewrite(path, lambda h: None, rehash=False)
    with pytest.warns(UncheckedCheckpointWarning, match="no checksum"):
        loaded = mixq.load_quantized(_mlp(), path)
    x = torch.randn(4, 6)
    assert torch.equal(loaded(x), q(x))


def _act_key(header: dict[str, Any]) -> str:
    return next(k for k in header["extra_state"] if "act_quant" in k)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bits", 1, r"bits must be an integer in 2\.\.16, got 1"),
        ("bits", 64, r"bits must be an integer in 2\.\.16, got 64"),
        ("bits", "8", r"bits must be an integer"),
        ("method", "bogus", r"method must be one of mse, percentile, got 'bogus'"),
        ("signed", "yes", r"signed must be true, false or null"),
    ],
)
@pytest.mark.parametrize("rehash", [True, False])
def test_edited_activation_state_is_refused(
    tmp_path: Path, field: str, value: object, message: str, rehash: bool
) -> None:
    _, path = _saved(tmp_path)

    def edit(header: dict[str, Any]) -> None:
        header["extra_state"][_act_key(header)][field] = value

    _rewrite(path, edit, rehash=rehash)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UncheckedCheckpointWarning)
        with pytest.raises(CheckpointError, match=message):
            mixq.load_quantized(_mlp(), path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: h.pop("extra_state"), "'extra_state' is missing"),
        (lambda h: h.pop("layers"), "'layers' is missing"),
        (lambda h: h["extra_state"].pop(_act_key(h)), "no activation state for"),
        (lambda h: h["layers"][0].update(kind="conv9"), "kind must be 'conv2d' or 'linear'"),
        (lambda h: h["layers"][0].update(act_bits=1), r"act_bits must be 0 or an integer"),
        (lambda h: h["layers"][0].pop("bn"), "needs exactly the keys"),
        (lambda h: h["layers"][0].update(bn="1"), "'1' is a ReLU, not a BatchNorm2d"),
        (lambda h: h["layers"].append(3), "needs exactly the keys"),
    ],
)
def test_malformed_headers_are_checkpoint_errors(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    _, path = _saved(tmp_path)
    _rewrite(path, edit, rehash=True)
    with pytest.raises(CheckpointError, match=message):
        mixq.load_quantized(_mlp(), path)


def test_a_non_finite_model_is_not_saved(tmp_path: Path) -> None:
    q, _ = _saved(tmp_path)
    with torch.no_grad():
        q[0].weight[0, 0] = math.inf
    with pytest.raises(NonFiniteWeightError, match=r"not saving .*bad\.safetensors: 0\.weight"):
        mixq.save_quantized(q, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
