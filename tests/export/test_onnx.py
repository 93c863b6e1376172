"""ONNX export of the integer model: onnxruntime's integers equal the engine's, exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.fx as fx
from _export_models import quantize, tiny_resnet
from torch import nn

onnx = pytest.importorskip("onnx", reason="ONNX export needs the 'export' extra")
ort = pytest.importorskip("onnxruntime", reason="ONNX export needs the 'export' extra")

import mixq  # noqa: E402
from mixq.errors import IntegerConversionError  # noqa: E402
from mixq.export.onnx_integer import export_onnx  # noqa: E402
from mixq.export.onnx_runtime import onnx_session, run_onnx  # noqa: E402
from mixq.integer.compile import IntegerModel  # noqa: E402
from mixq.integer.ops import GlobalAvgPool, QuantizeInput, Requantize, Rescale  # noqa: E402
from mixq.ratio import Ratio  # noqa: E402
from mixq.recipe import LayerConfig, Recipe  # noqa: E402


def small_cnn() -> nn.Module:
    """Conv-BN-ReLU, max pooling, a grouped conv with a bias, global pooling, a linear."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()


def quantized(net: nn.Module, images: list[torch.Tensor], recipe: Recipe) -> nn.Module:
    torch.manual_seed(0)
    for module in net.modules():  # BN statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return mixq.quantize(net, recipe, calibration_data=images, progress=False)


def signed_images(*shape: int, batches: int = 2) -> list[torch.Tensor]:
    """Normalised images: negative values, so the first layer's input is signed."""
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(*shape, generator=generator) for _ in range(batches)]


def unsigned_images(*shape: int, batches: int = 2) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return [torch.rand(*shape, generator=generator) for _ in range(batches)]


def assert_onnx_equals_engine(
    model: IntegerModel, example: torch.Tensor, x: torch.Tensor, path: Path
) -> torch.Tensor:
    export_onnx(model, example, path)
    got = run_onnx(path, x)
    expected = model.forward_integer(x)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected), f"{int((got != expected).sum())} integers differ"
    return got


@pytest.fixture(scope="module")
def resnet_a4() -> nn.Module:
    images = signed_images(4, 3, 32, 32)
    return quantize(tiny_resnet(), Recipe.preset("rmsmp", act_bits=4), images)


@pytest.mark.parametrize("engine", ["reference", "int8"])
def test_resnet_with_signed_input_equals_engine(
    resnet_a4: nn.Module, engine: str, tmp_path: Path
) -> None:
    example = signed_images(2, 3, 32, 32, batches=1)[0]
    model = mixq.to_integer(resnet_a4, example, engine=engine)
    x = 1.5 * signed_images(6, 3, 32, 32, batches=1)[0]  # another batch size, some clipping
    got = assert_onnx_equals_engine(model, example, x, tmp_path / "resnet.onnx")
    assert got.shape == (6, 10)


def test_resnet_file_uses_standard_integer_ops(resnet_a4: nn.Module, tmp_path: Path) -> None:
    example = signed_images(1, 3, 32, 32, batches=1)[0]
    model = mixq.to_integer(resnet_a4, example)
    export_onnx(model, example, tmp_path / "resnet.onnx")
    proto = onnx.load(str(tmp_path / "resnet.onnx"))
    ops = {node.op_type for node in proto.graph.node}
    assert {"ConvInteger", "MatMulInteger", "Div", "Round"} <= ops
    assert not ({"Conv", "MatMul", "Gemm"} & ops)  # no float layer
    assert all(node.domain in ("", "ai.onnx") for node in proto.graph.node)
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert float(metadata["mixq.output_scale"]) == model.output_scale
    # 4-bit inputs run int8 weights; the 8-bit first and last layers, uint8 ones (u8*u8).
    assert weight_types(proto) == {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}


def weight_types(proto: onnx.ModelProto) -> set[int]:
    return {init.data_type for init in proto.graph.initializer if init.name.endswith("/weight")}


@pytest.mark.parametrize("act_bits", [4, 8])
def test_small_cnn_with_unsigned_input_equals_engine(act_bits: int, tmp_path: Path) -> None:
    images = unsigned_images(8, 3, 16, 16)
    net = quantized(small_cnn(), images, Recipe.preset("rmsmp", act_bits=act_bits))
    model = mixq.to_integer(net, images[0])
    x = torch.cat([images[1], 1.3 * images[0]])
    assert_onnx_equals_engine(model, images[0], x, tmp_path / "cnn.onnx")


def test_residual_blocks_with_torch_flatten_equal_engine(tmp_path: Path) -> None:
    images = signed_images(4, 3, 16, 16)
    net = quantize(tiny_resnet(), Recipe.preset("rmsmp", act_bits=4), images)
    model = mixq.to_integer(net, images[0])
    assert_onnx_equals_engine(model, images[0], images[1][:3], tmp_path / "residual.onnx")


def test_eight_bit_activations_on_resnet_equal_engine(tmp_path: Path) -> None:
    # 8-bit unsigned inputs up to 255 with fixed-8 rows: the uint8-weight (u8*u8) path.
    images = signed_images(4, 3, 32, 32)
    net = quantize(tiny_resnet(), Recipe.preset("rmsmp", act_bits=8), images)
    model = mixq.to_integer(net, images[0], engine="int8")
    assert_onnx_equals_engine(model, images[0], images[1], tmp_path / "resnet8.onnx")
    proto = onnx.load(str(tmp_path / "resnet8.onnx"))
    assert onnx.TensorProto.UINT8 in weight_types(proto)


def test_run_onnx_takes_a_session(resnet_a4: nn.Module, tmp_path: Path) -> None:
    example = signed_images(1, 3, 32, 32, batches=1)[0]
    model = mixq.to_integer(resnet_a4, example)
    export_onnx(model, example, tmp_path / "resnet.onnx")
    session = onnx_session(tmp_path / "resnet.onnx", threads=1)
    assert torch.equal(run_onnx(session, example), model.forward_integer(example))


# -- single operations on hand-built integer graphs -------------------------------------------


def chain(*modules: nn.Module) -> IntegerModel:
    """An integer model applying ``modules`` in turn (the compiler's module types)."""
    root, graph = nn.Module(), fx.Graph()
    value = graph.placeholder("x")
    for index, module in enumerate(modules):
        root.add_module(f"m{index}", module)
        value = graph.call_module(f"m{index}", (value,))
    graph.output(value)
    return IntegerModel(fx.GraphModule(root, graph), 1.0, {}, "reference")


def test_entrance_divides_and_rounds_like_torch(tmp_path: Path) -> None:
    # Values at and next to every midpoint (k + 1/2) * step: where a reciprocal multiply
    # or another rounding rule would differ from float32 division and half-to-even.
    step = torch.tensor(0.0371)
    mids = (torch.arange(-130, 130, dtype=torch.float32) + 0.5) * step
    below = torch.nextafter(mids, torch.tensor(-1e9))
    above = torch.nextafter(mids, torch.tensor(1e9))
    noise = torch.randn(20_000, generator=torch.Generator().manual_seed(3)) * 3
    x = torch.cat([mids, below, above, noise]).reshape(1, -1)
    model = chain(QuantizeInput(step, -127, 127))
    assert_onnx_equals_engine(model, x, x, tmp_path / "entrance.onnx")


@pytest.mark.parametrize(("multiplier", "shift"), [(1, 1), (3, 2), (1_431_655_765, 32), (5, 0)])
def test_rescale_rounds_ties_up_for_negative_values(
    multiplier: int, shift: int, tmp_path: Path
) -> None:
    x = torch.arange(-127, 128, dtype=torch.float32).reshape(1, -1)
    model = chain(QuantizeInput(torch.tensor(1.0), -127, 127), Rescale(multiplier, shift))
    assert_onnx_equals_engine(model, x, x, tmp_path / "rescale.onnx")


def test_requantize_clips_to_levels(tmp_path: Path) -> None:
    x = torch.arange(-127, 128, dtype=torch.float32).reshape(1, -1)
    model = chain(QuantizeInput(torch.tensor(1.0), -127, 127), Requantize(3, 3, -7, 7))
    assert_onnx_equals_engine(model, x, x, tmp_path / "requantize.onnx")


def test_unprovable_range_still_equals_engine(tmp_path: Path) -> None:
    # The pooled sum's worst case (255 * 127 * 2^20) times 2^31 exceeds int64, so the export
    # cannot prove the biased division safe and falls back to floor via Mod, which repeats
    # the engine's arithmetic; these inputs stay far from the worst case.
    generator = torch.Generator().manual_seed(4)
    x = torch.randint(-5, 6, (3, 2, 15, 17), generator=generator).float()
    model = chain(
        QuantizeInput(torch.tensor(1.0), -127, 127),
        Rescale(2**20, 0),
        GlobalAvgPool(2**31 - 3, 45),
    )
    assert_onnx_equals_engine(model, x, x, tmp_path / "fallback.onnx")
    proto = onnx.load(str(tmp_path / "fallback.onnx"))
    assert "Mod" in {node.op_type for node in proto.graph.node}


def test_onnxruntime_convinteger_pads_with_the_zero_point() -> None:
    # Recorded behaviour, not relied on: the export pads signed inputs explicitly.
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("ConvInteger", ["x", "w", "z"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        [
            numpy_helper.from_array(np.ones((1, 1, 3, 3), np.uint8), "w"),
            numpy_helper.from_array(np.array(128, np.uint8), "z"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.full((1, 1, 2, 2), 130, np.uint8)})
    assert y.ravel().tolist() == [8, 8, 8, 8]  # four inputs of level 2; padding adds 0


# -- what the export refuses -------------------------------------------------------------------


def test_weights_beyond_int8_raise_naming_the_layer(tmp_path: Path) -> None:
    images = unsigned_images(8, 3, 16, 16)
    recipe = Recipe(LayerConfig(Ratio.parse("pot-5"), act_bits=4))  # integers up to 2^14
    net = quantized(small_cnn(), images, recipe)
    model = mixq.to_integer(net, images[0])
    with pytest.raises(IntegerConversionError, match=r"layer '0'.*int8"):
        export_onnx(model, images[0], tmp_path / "pot5.onnx")


def test_activations_beyond_8_bits_raise_naming_the_layer(tmp_path: Path) -> None:
    images = unsigned_images(8, 3, 16, 16)
    recipe = Recipe(LayerConfig(Ratio.parse("fixed-4"), act_bits=10))
    net = quantized(small_cnn(), images, recipe)
    model = mixq.to_integer(net, images[0])
    with pytest.raises(IntegerConversionError, match=r"layer '0'.*more than 8 bits"):
        export_onnx(model, images[0], tmp_path / "a10.onnx")


@pytest.mark.parametrize("act_bits", [4, 8])
def test_mobilenet_style_ops_equal_engine(act_bits: int, tmp_path: Path) -> None:
    # ReLU6 and hardtanh clamps, cat, padded max pool, Hardswish/SiLU/Sigmoid tables.
    from _export_models import quantized_mobile

    net, data = quantized_mobile(act_bits)
    model = mixq.to_integer(net, data[0][:1])
    export_onnx(model, data[0][:1], tmp_path / "m.onnx")
    ops = {n.op_type for n in onnx.load(tmp_path / "m.onnx").graph.node}
    assert {"Gather", "Concat", "MaxPool"} <= ops
    for x in data[1:]:
        assert torch.equal(run_onnx(tmp_path / "m.onnx", x), model.forward_integer(x))
