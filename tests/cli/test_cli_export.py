"""``mixq export``: packed integers and ONNX that reproduce the integer engine exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _tiny import TINY_MODEL

from mixq.cli._common import load_model
from mixq.cli._zoo import get_model
from mixq.cli.main import main
from mixq.export.packed import load_packed
from mixq.integer import to_integer


def _images(tiny_data: Path) -> torch.Tensor:
    images, _ = next(iter(get_model(TINY_MODEL).loader("test", 16, root=tiny_data)))
    return images


def _engine_integers(quantized: Path, images: torch.Tensor) -> torch.Tensor:
    model = load_model(quantized, None).model
    return to_integer(model, images[:1]).forward_integer(images)


def test_packed_export_loads_back_to_the_same_integers(
    quantized: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["export", str(quantized), "--format", "packed", "-o", str(tmp_path), "-q"]) == 0
    path = tmp_path / "model.packed.safetensors"
    assert f"wrote {path}" in capsys.readouterr().out
    images = _images(tiny_data)
    loaded = load_packed(path)
    assert torch.equal(loaded.forward_integer(images), _engine_integers(quantized, images))
    # 4-bit rows, packed two to a byte: far smaller than the quantised checkpoint's floats.
    assert path.stat().st_size < quantized.stat().st_size / 2


def test_onnx_export_runs_in_onnxruntime_with_the_same_integers(
    quantized: Path, tiny_data: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    from mixq.export.onnx_runtime import run_onnx

    assert main(["export", str(quantized), "--format", "onnx", "-o", str(tmp_path), "-q"]) == 0
    images = _images(tiny_data)
    got = run_onnx(tmp_path / "model.onnx", images)
    assert torch.equal(got.to(torch.int64), _engine_integers(quantized, images))


def test_bad_exports_fail_cleanly(
    quantized: Path, float_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["export", str(float_weights), "--model", TINY_MODEL, "-o", str(tmp_path)]) == 1
    assert "holds float weights" in capsys.readouterr().err
    assert main(["export", str(quantized), "--format", "tflite"]) == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.safetensors")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_qdq_export_runs_in_onnxruntime_close_to_fake_quant(
    quantized: Path, tiny_data: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    from mixq.export.onnx_runtime import run_onnx

    assert main(["export", str(quantized), "--format", "qdq", "-o", str(tmp_path), "-q"]) == 0
    images = _images(tiny_data)[:1]  # QDQ files have static shapes: the example's batch of 1
    got = run_onnx(tmp_path / "model.qdq.onnx", images)
    with torch.no_grad():
        expected = load_model(quantized, None).model(images)
    assert got.shape == expected.shape
    # onnxruntime requantises in float32: close to fake-quant, not equal.
    assert (got - expected).abs().max() <= 0.1 * expected.abs().max()
