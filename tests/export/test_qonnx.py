"""QONNX export of uniform fixed-point models, executed by qonnx against the fake-quant model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx", reason="QONNX export needs the 'export' extra")

import mixq  # noqa: E402
from mixq.errors import IntegerConversionError  # noqa: E402
from mixq.export.qonnx import QONNX_DOMAIN, export_qonnx  # noqa: E402
from mixq.models.cifar_resnet import CifarResNet  # noqa: E402
from mixq.ratio import Ratio  # noqa: E402
from mixq.recipe import LayerConfig, Recipe  # noqa: E402


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()


def images(*shape: int, batches: int = 2) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return [torch.randn(*shape, generator=generator) for _ in range(batches)]


def quantized(net: nn.Module, data: list[torch.Tensor], recipe: Recipe | str) -> nn.Module:
    torch.manual_seed(0)
    return mixq.quantize(net, recipe, calibration_data=data, progress=False)


def execute(path: Path, x: torch.Tensor) -> np.ndarray:
    """Run a QONNX file with qonnx's own executor (its Quant in numpy, the rest in ORT)."""
    pytest.importorskip("qonnx", reason="executing QONNX needs the qonnx package")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    model = ModelWrapper(str(path)).transform(InferShapes())
    return execute_onnx(model, {"input": x.numpy()})["output"]


def assert_matches_fake_quant(net: nn.Module, x: torch.Tensor, path: Path) -> None:
    export_qonnx(net, x, path)
    got = execute(path, x)
    with torch.no_grad():
        expected = net(x).numpy()
    # Same levels; float32 sums in another order and per-row scales rounded once.
    tolerance = 1e-5 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)


def test_resnet_with_fixed_layers_of_two_widths_matches_fake_quant(tmp_path: Path) -> None:
    data = images(4, 3, 32, 32)
    # fixed-4 rows and 4-bit inputs inside, fixed-8 and 8-bit inputs at the first and last.
    net = quantized(CifarResNet(blocks_per_stage=1), data, Recipe.preset("fixed4", act_bits=4))
    assert_matches_fake_quant(net, data[1], tmp_path / "resnet.onnx")
    proto = onnx.load(str(tmp_path / "resnet.onnx"))
    quants = [n for n in proto.graph.node if n.op_type == "Quant"]
    assert len(quants) == 2 * 8  # an input and a weight Quant for each of 8 layers
    assert {n.domain for n in quants} == {QONNX_DOMAIN}
    bit_widths = {
        float(onnx.numpy_helper.to_array(i))
        for i in proto.graph.initializer
        if i.name.endswith("/bitwidth")
    }
    assert bit_widths == {4.0, 8.0}


def test_small_cnn_matches_fake_quant(tmp_path: Path) -> None:
    data = images(8, 3, 12, 12)
    net = quantized(small_cnn(), data, Recipe.preset("fixed8"))
    assert_matches_fake_quant(net, data[0], tmp_path / "cnn.onnx")


def test_weight_quant_scales_are_per_row(tmp_path: Path) -> None:
    data = images(8, 3, 12, 12)
    net = quantized(small_cnn(), data, Recipe.preset("fixed4", act_bits=4))
    export_qonnx(net, data[0], tmp_path / "cnn.onnx")
    proto = onnx.load(str(tmp_path / "cnn.onnx"))
    scales = {
        i.name: onnx.numpy_helper.to_array(i)
        for i in proto.graph.initializer
        if i.name.endswith("weight/scale")
    }
    conv_scale = next(v for k, v in scales.items() if k.startswith("_4/"))
    assert conv_scale.shape == (8, 1, 1, 1)
    layer = net[4]  # a fixed-4 layer (the first and last are fixed-8)
    expected = layer.weight_quant.alpha.detach().numpy() / 7  # alpha_r / (2^(4-1) - 1)
    np.testing.assert_allclose(conv_scale.ravel(), expected, rtol=1e-6)


@pytest.mark.parametrize("preset", ["rmsmp", "sp2-4", "pot4"])
def test_non_uniform_rows_raise(preset: str, tmp_path: Path) -> None:
    data = images(8, 3, 12, 12)
    net = quantized(small_cnn(), data, Recipe.preset(preset, act_bits=4))
    with pytest.raises(IntegerConversionError, match="QONNX's Quant is uniform"):
        export_qonnx(net, data[0], tmp_path / "x.onnx")


def test_fixed_rows_of_two_widths_in_one_layer_raise(tmp_path: Path) -> None:
    data = images(8, 3, 12, 12)
    recipe = Recipe(LayerConfig(Ratio.parse("fixed-4:0.5,fixed-8:0.5"), act_bits=8))
    net = quantized(small_cnn(), data, recipe)
    with pytest.raises(IntegerConversionError, match=r"layer '0' mixes .*one bit width"):
        export_qonnx(net, data[0], tmp_path / "x.onnx")
