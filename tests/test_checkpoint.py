"""Saving and loading quantised models: exact round trips and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import mixq
import mixq.checkpoint as checkpoint
from mixq.checkpoint import FORMAT_NAME, FORMAT_VERSION, read_header
from mixq.models import resnet20
from mixq.nn.layers import QuantConv2d
from mixq.recipe import Rule


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _resnet20_random(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = resnet20()
    g = _gen(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 5)
    ).eval()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_rmsmp_resnet20_round_trip(tmp_path: Path) -> None:
    x = torch.randn(3, 3, 32, 32, generator=_gen(0))
    q = mixq.quantize(_resnet20_random(0), "rmsmp", progress=False)
    mixq.calibrate(q, [x], progress=False)
    q.eval()
    path = tmp_path / "r20.safetensors"
    mixq.save_quantized(q, path, extra={"note": "test", "epochs": 0})
    assert _files(tmp_path) == ["r20.safetensors"]

    # Load on a float model with other random weights: everything comes from the file.
    loaded = mixq.load_quantized(_resnet20_random(1), path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), q(x))
    assert mixq.describe(loaded) == mixq.describe(q)
    for (name, a), (_, b) in zip(q.named_modules(), loaded.named_modules(), strict=True):
        assert type(a) is type(b), name
        if isinstance(a, QuantConv2d):
            assert a.assignment == b.assignment
            assert a.folded_bn_name == b.folded_bn_name
            assert a.act_quant.signed == b.act_quant.signed
    header = read_header(path)
    assert header["format"] == FORMAT_NAME and header["version"] == FORMAT_VERSION
    assert header["extra"] == {"note": "test", "epochs": 0}
    assert len(header["layers"]) == 20
    assert header["layers"][1] == {
        "name": "layer1.0.conv1",
        "kind": "conv2d",
        "bn": "layer1.0.bn1",
        "candidates": ["sp2-4", "fixed-4", "fixed-8"],
        "act_bits": 8,
    }


def test_mlp_round_trip_with_calibration(tmp_path: Path) -> None:
    batches = [torch.randn(32, 12, generator=_gen(i)) for i in range(2)]
    q = mixq.quantize(_mlp(), "rmsmp", calibration_data=batches, progress=False).eval()
    path = tmp_path / "sub" / "mlp.safetensors"  # folders are created
    mixq.save_quantized(q, path)
    loaded = mixq.load_quantized(_mlp(), path).eval()
    x = torch.randn(7, 12, generator=_gen(5))
    with torch.no_grad():
        assert torch.equal(loaded(x), q(x))
    assert [a.signed for a in loaded.modules() if isinstance(a, mixq.ActQuantizer)] == [
        True,
        False,
        True,
    ]
    assert _files(path.parent) == ["mlp.safetensors"]


def test_round_trip_keeps_float_layers_and_uncalibrated_state(tmp_path: Path) -> None:
    model = _resnet20_random(2)
    recipe = mixq.Recipe.preset("msp")
    recipe = mixq.Recipe(
        recipe.default,
        (*recipe.rules, Rule("layer2.1.conv2", skip=True)),
        scale_method="max",
        row_scorer="magnitude",
    )
    q = mixq.quantize(model, recipe, progress=False)
    path = tmp_path / "m.safetensors"
    mixq.save_quantized(q, path)
    loaded = mixq.load_quantized(model, path).eval()
    assert mixq.describe(loaded).float_layers == ["layer2.1.conv2"]
    assert isinstance(loaded.layer2[1].bn2, nn.BatchNorm2d)
    with pytest.raises(mixq.CalibrationError, match="not calibrated"):
        loaded(torch.randn(1, 3, 32, 32))
    mixq.set_quantization(loaded, activations=False)
    mixq.set_quantization(q, activations=False)
    x = torch.randn(2, 3, 32, 32, generator=_gen(3))
    with torch.no_grad():
        assert torch.equal(loaded(x), q.eval()(x))


def test_overwriting_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    a = mixq.quantize(_mlp(), "fixed4", progress=False)
    b = mixq.quantize(_mlp(), "fixed8", progress=False)
    mixq.save_quantized(a, path)
    mixq.save_quantized(b, path)
    assert _files(tmp_path) == ["m.safetensors"]
    assert [entry["candidates"] for entry in read_header(path)["layers"]] == [["fixed-8"]] * 3


def test_failed_save_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q = mixq.quantize(_mlp(), "rmsmp", progress=False)

    def broken_save_file(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"half a file")  # a partial write, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", broken_save_file)
    path = tmp_path / "m.safetensors"
    with pytest.raises(OSError, match="disk full"):
        mixq.save_quantized(q, path)
    assert not path.exists()
    assert _files(tmp_path) == []

    # An existing checkpoint survives a failed overwrite untouched.
    monkeypatch.undo()
    mixq.save_quantized(q, path)
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint, "save_file", broken_save_file)
    with pytest.raises(OSError, match="disk full"):
        mixq.save_quantized(q, path)
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["m.safetensors"]


def test_header_is_plain_json(tmp_path: Path) -> None:
    q = mixq.quantize(_mlp(), "msp", progress=False)
    path = tmp_path / "m.safetensors"
    mixq.save_quantized(q, path)
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    metadata = json.loads(raw[8 : 8 + size])["__metadata__"]
    header = json.loads(metadata["mixq"])
    assert header == read_header(path)
    assert header["extra_state"]["0.weight_quant._extra_state"] == {
        "version": 1,
        "candidates": ["fixed-8"],
    }
    assert header["extra_state"]["2.weight_quant._extra_state"]["candidates"] == [
        "sp2-4",
        "fixed-4",
    ]
