"""QDQ ONNX export: graph structure, int8 weights equal to the fake-quant levels, scales,
and onnxruntime's output against the fake-quantised model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from _export_models import batches, quantize, quantized_mobile, tiny_resnet

onnx = pytest.importorskip("onnx", reason="ONNX export needs the 'export' extra")
ort = pytest.importorskip("onnxruntime", reason="ONNX export needs the 'export' extra")

from onnx import numpy_helper  # noqa: E402

from mixq.errors import IntegerConversionError  # noqa: E402
from mixq.export.onnx_runtime import onnx_session, run_onnx  # noqa: E402
from mixq.export.qdq import export_qdq  # noqa: E402
from mixq.integer.weights import integer_weights  # noqa: E402
from mixq.nn.layers import QuantConv2d  # noqa: E402
from mixq.recipe import Recipe  # noqa: E402


@pytest.fixture(scope="module")
def resnet_a8() -> tuple[torch.nn.Module, list[torch.Tensor]]:
    data = batches((8, 3, 32, 32))
    return quantize(tiny_resnet(), Recipe.preset("rmsmp", act_bits=8), data), data


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_graph_is_qdq_around_conv_and_gemm_with_fake_quant_levels(
    resnet_a8: tuple[torch.nn.Module, list[torch.Tensor]], tmp_path: Path
) -> None:
    net, data = resnet_a8
    path = export_qdq(net, data[0][:1], tmp_path / "m.onnx")
    model = onnx.load(path)
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["Conv"] == 7 and ops["Gemm"] == 1
    assert ops["QuantizeLinear"] == 8  # one per tensor a quantised layer reads
    values = _initializers(model)
    stem = integer_weights(net.conv1)
    assert values["conv1/weight"].dtype == np.int8
    assert np.array_equal(values["conv1/weight"], stem.values.numpy())
    np.testing.assert_array_equal(values["conv1/weight/scale"], stem.step.astype(np.float32))
    assert values["conv1/bias"].dtype == np.int32
    # The network input (fx node "x") is quantised at the stem's input step, signed.
    assert values["x/scale"] == pytest.approx(float(net.conv1.act_quant.step))
    assert values["x/zero"].dtype == np.int8


def test_onnxruntime_fuses_into_integer_kernels(
    resnet_a8: tuple[torch.nn.Module, list[torch.Tensor]], tmp_path: Path
) -> None:
    net, data = resnet_a8
    path = export_qdq(net, data[0][:1], tmp_path / "m.onnx")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node)
    # Every conv whose output only a quantiser reads (the three whose output a residual
    # addition reads, the stem's included, stay float) and the classifier run as integer
    # kernels.
    assert ops["QLinearConv"] == 3 and ops["QGemm"] == 1


def test_residual_additions_read_the_float_tensor(
    resnet_a8: tuple[torch.nn.Module, list[torch.Tensor]], tmp_path: Path
) -> None:
    net, data = resnet_a8
    model = onnx.load(export_qdq(net, data[0][:1], tmp_path / "m.onnx"))
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert len(adds) == 3  # one per residual block
    for add in adds:
        assert "DequantizeLinear" not in {producers.get(i) for i in add.input}


def test_4_bit_activations_fuse_too(tmp_path: Path) -> None:
    data = batches((8, 3, 32, 32))
    net = quantize(tiny_resnet(), Recipe.preset("rmsmp", act_bits=4), data)
    path = export_qdq(net, data[0][:1], tmp_path / "m.onnx")
    model = onnx.load(path)
    clips = [n for n in model.graph.node if n.op_type == "Clip"]
    # The 4-bit unsigned levels are clamped as uint8 between Q and DQ, to 0..15.
    values = _initializers(model)
    integer_clips = [c for c in clips if values[c.input[1]].dtype == np.uint8]
    assert integer_clips and all(int(values[c.input[2]]) == 15 for c in integer_clips)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node)
    assert ops["QLinearConv"] == 3 and ops["QGemm"] == 1  # as at A8


def test_weights_are_spread_so_the_int32_bias_keeps_a_4_bit_input_steps_fraction(
    tmp_path: Path,
) -> None:
    data = batches((8, 3, 32, 32))
    net = quantize(tiny_resnet(), Recipe.preset("rmsmp", act_bits=4), data)
    values = _initializers(onnx.load(export_qdq(net, data[0][:1], tmp_path / "m.onnx")))
    spreads = []
    for name, layer in net.named_modules():
        if not isinstance(layer, QuantConv2d):
            continue
        base, levels = name.replace(".", "_"), integer_weights(layer)
        weight, scale = values[f"{base}/weight"], values[f"{base}/weight/scale"]
        spread = np.rint(levels.step.astype(np.float32) / scale)
        assert set(np.log2(spread)) <= set(range(8))  # powers of two
        assert np.array_equal(weight, levels.values.numpy() * spread.reshape(-1, 1, 1, 1))
        assert np.abs(weight).max() <= 127
        # Dequantised, the weights are the fake-quant levels times their step, to the bit.
        np.testing.assert_array_equal(
            weight.astype(np.float32) * scale.reshape(-1, 1, 1, 1),
            levels.values.numpy().astype(np.float32)
            * levels.step.astype(np.float32).reshape(-1, 1, 1, 1),
        )
        bias_step = values[f"{base}/bias/scale"]
        _, bias = layer.effective_weight_bias()
        assert bias is not None
        error = np.abs(values[f"{base}/bias"] * bias_step - bias.detach().numpy())
        assert error.max() <= 0.51 * bias_step.max()
        spreads.append(spread)
    assert max(s.max() for s in spreads) >= 16  # 4-bit rows (at most 7) under 4-bit inputs


@pytest.mark.parametrize("act_bits", [4, 8])
def test_onnxruntime_agrees_with_fake_quant(act_bits: int, tmp_path: Path) -> None:
    data = batches((8, 3, 32, 32))
    net = quantize(tiny_resnet(), Recipe.preset("rmsmp", act_bits=act_bits), data)
    path = export_qdq(net, data[0][:1], tmp_path / "m.onnx")
    session = onnx_session(path, threads=1)
    for x in data[1][:4].split(1):
        got = run_onnx(session, x)
        with torch.no_grad():
            expected = net(x)
        # Float32 requantisation and the residual path's quantised reads: a few levels of
        # one step apart at most on this model (measured max 0.025 at A8, 0.12 at A4).
        assert (got - expected).abs().max() <= 0.05 * expected.abs().max() * (8 / act_bits)


def test_mobilenet_ops_export_and_run(tmp_path: Path) -> None:
    net, data = quantized_mobile(act_bits=8)
    path = export_qdq(net, data[0][:1], tmp_path / "m.onnx")
    ops = Counter(n.op_type for n in onnx.load(path).graph.node)
    assert {"Concat", "HardSigmoid", "Sigmoid"} <= set(ops)
    got = run_onnx(path, data[1][:1])
    with torch.no_grad():
        expected = net(data[1][:1])
    assert (got - expected).abs().max() <= 0.1 * expected.abs().max()


def test_batch_is_free(
    resnet_a8: tuple[torch.nn.Module, list[torch.Tensor]], tmp_path: Path
) -> None:
    net, data = resnet_a8
    path = export_qdq(net, data[0][:1], tmp_path / "m.onnx")
    got = run_onnx(path, data[1][:5])
    assert got.shape == (5, 10)
    with torch.no_grad():
        assert torch.equal(got.argmax(1)[:1], net(data[1][:1]).argmax(1))


def test_integer_model_is_refused_with_a_type_error(
    resnet_a8: tuple[torch.nn.Module, list[torch.Tensor]], tmp_path: Path
) -> None:
    from mixq.integer import to_integer

    net, data = resnet_a8
    with pytest.raises(TypeError, match="fake-quantised model"):
        export_qdq(to_integer(net, data[0][:1]), data[0][:1], tmp_path / "m.onnx")


def test_unquantised_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IntegerConversionError, match="no quantised layer"):
        export_qdq(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.zeros(1, 2), tmp_path / "m")
    assert not (tmp_path / "m").exists()
