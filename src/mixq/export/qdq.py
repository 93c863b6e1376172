"""Standard QDQ ONNX of a fake-quantised model: ``QuantizeLinear``/``DequantizeLinear``
around ``Conv``/``Gemm``, the pattern onnxruntime, TensorRT and OpenVINO fuse into int8
kernels.

Every scheme's levels are integers over one step per row (:func:`mixq.integer.weights.
integer_weights`), so Fixed, PoT and SP2 rows alike are an ``int8`` weight initializer with
a per-channel ``DequantizeLinear`` (axis 0, zero point 0, scale the row's step); rows whose
integers exceed int8 (PoT above 5 bits) are refused. Each row's integers are multiplied by
the largest power of two that keeps them within int8 (and within what x86's u8*s8 kernel
adds without saturating) and its scale divided by it, exactly: the same weights, and a
finer grid for the bias, which is ``int32`` at scale ``input step * weight scale`` as
onnxruntime's own quantizer writes it (:func:`weight_spread`). Each tensor that a
quantised layer reads is quantised once, per tensor, at that layer's calibrated input step
(the finest one where several layers read it): ``uint8`` for unsigned levels, ``int8`` for
signed ones, zero point 0; where the quantiser's range is narrower than the type's, a
``uint8`` ``Clip`` between ``QuantizeLinear`` and ``DequantizeLinear`` (4-bit activations:
onnxruntime still fuses the convolutions around it) or, for signed grids, a float ``Clip``
ahead of ``QuantizeLinear``. Only the
layers read the dequantised value; a residual addition reads the float tensor, as in the
fake-quantised model (mixq's integer engine carries the shortcut on a 16-bit refined grid,
within a small fraction of a step of it; clipping it to the 4-bit levels cost 2 points of
top-1 at A4 on ResNet-20). ReLU, residual additions, pooling, ReLU6/clamp, cat and
Hardswish/SiLU/Sigmoid stay float ops between the Q/DQ pairs.

onnxruntime requantises in float32, so this format is fast but not bit-exact: some
predictions differ from :func:`mixq.integer.to_integer`'s and from the fake-quantised
model's (``benchmarks/qdq_agreement.py`` counts them on real images). The int32 bias is the
one systematic difference from fake-quant: the fake-quantised model with the file's biases
computes what onnxruntime computes (see ``docs/integer.md``, *Formats*).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch.fx as fx
from torch import Tensor, nn

from mixq.errors import IntegerConversionError, UnsupportedLayerError
from mixq.export.fake_quant_graph import FakeQuantExporter, copy_quantized
from mixq.export.onnx_graph import OPSET, emit_conv, save_checked
from mixq.integer.compile import IntegerModel, trace_with_shapes
from mixq.integer.weights import integer_weights
from mixq.nn.act_quant import ActQuantizer
from mixq.nn.layers import QUANT_LAYERS, QuantConv2d, QuantLayer

_INT8_MAX = 127
_INT16_MAX = 2**15 - 1
_INT32_MAX = 2**31 - 1


def export_qdq(quantized_model: nn.Module, example_input: Tensor, path: str | Path) -> Path:
    """Write a quantised model (from :func:`mixq.quantize`) as QDQ ONNX; returns ``path``.

    ``example_input`` fixes every dimension but the batch, which stays free.
    """
    if isinstance(quantized_model, IntegerModel):
        raise UnsupportedLayerError(
            "export_qdq takes the fake-quantised model (from mixq.quantize), not the "
            "IntegerModel: QDQ is the float graph with quantise/dequantise pairs"
        )
    model, layers = copy_quantized(quantized_model)
    for name, layer in layers.items():
        _check_layer(name, layer)
    graph = trace_with_shapes(model, example_input)
    proto = _QdqExporter(model, _input_quantizers(graph, model)).build(graph)
    return save_checked(proto, path)


def _check_layer(name: str, layer: QuantLayer) -> None:
    act = layer.act_quant
    if act is None or not act.enabled or not bool(act.calibrated):
        raise IntegerConversionError(
            f"layer {name!r}: input quantiser missing, off or not calibrated"
        )
    if act.bits > 8:
        raise IntegerConversionError(f"layer {name!r}: {act.bits}-bit inputs do not fit 8-bit Q/DQ")
    top = int(integer_weights(layer).values.abs().max())
    if top > _INT8_MAX:
        raise IntegerConversionError(
            f"layer {name!r}: weight integers reach {top}, beyond int8 (PoT above 5 bits)"
        )


def _input_quantizers(graph: fx.Graph, model: nn.Module) -> dict[fx.Node, ActQuantizer]:
    """For each tensor a quantised layer reads, the finest input quantiser that reads it."""
    modules = dict(model.named_modules())
    found: dict[fx.Node, ActQuantizer] = {}
    for node in graph.nodes:
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, QUANT_LAYERS) and isinstance(node.args[0], fx.Node):
            source, act = node.args[0], module.act_quant
            if act is None:
                continue  # _check_layer refused it already
            if source not in found or float(act.step) < float(found[source].step):
                found[source] = act
    return found


def input_top(act: ActQuantizer) -> int:
    """The largest uint8 value a layer's input takes in onnxruntime (signed inputs are
    shifted to uint8 there, so they may reach 255)."""
    return 255 if bool(act.signed) else int(act.levels)


def weight_spread(values: np.ndarray, x_top: int) -> np.ndarray:
    """Per row, the largest power of two ``k`` by which the row's weight integers can be
    multiplied (and its scale divided, exactly) and still fit int8 without the saturation
    of x86's u8*s8 kernel (two products ``x_top * |w|`` must stay within int16).

    The int32 bias is stored at scale ``input step * weight scale``; a 4-bit row's integers
    (at most 7) times 16 make that scale 16 times finer, so the bias keeps what a coarse
    4-bit input step would round off (up to half of ``input step * row step``, a few
    percent of the next step at A4, which alone changed about 3% of ResNet-20's
    predictions in onnxruntime against the fake-quantised model).

    >>> weight_spread(np.array([[7, -3], [100, 2], [0, 0]]), 15).tolist()
    [16, 1, 1]
    >>> weight_spread(np.array([[7, -3]]), 255).tolist()
    [8]
    """
    limit = min(_INT8_MAX, _INT16_MAX // (2 * max(x_top, 1)))
    peak = np.abs(values.reshape(len(values), -1)).max(axis=1)
    room = np.floor(np.log2(limit / np.maximum(peak, 1))).astype(np.int64)
    return np.where(peak > 0, 2 ** np.maximum(room, 0), 1).astype(np.int64)


def activation_range(act: ActQuantizer) -> tuple[int, int]:
    """The integer levels of an activation quantiser: ``[-L, L]`` signed, ``[0, L]`` not."""
    levels = int(act.levels)
    return (-levels, levels) if bool(act.signed) else (0, levels)


class _QdqExporter(FakeQuantExporter):
    format_name = "QDQ"

    def __init__(self, model: nn.Module, quantizers: dict[fx.Node, ActQuantizer]) -> None:
        super().__init__(model)
        self.quantizers = quantizers
        self.steps: dict[str, float] = {}  # dequantised tensor -> its step
        # The layers read the Q/DQ value; every other reader (a residual addition) the float
        # one, as in the fake-quantised model and nearly as the integer engine, whose
        # shortcut carries a 16-bit refined grid.
        self.quantized: dict[fx.Node, str] = {}

    def build(self, graph: fx.Graph) -> Any:
        self.walk(graph.nodes)
        doc = "mixq fake-quantised model in QDQ: int8 per-channel weights, 8-bit activations."
        metadata = {"mixq.format": "qdq-1"}
        proto = self.graph.model(self.inputs, self.outputs, {"": OPSET}, doc, metadata)
        for value in (*proto.graph.input, *proto.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"  # reshapes keep -1 there
        return proto

    def _converted(self, node: fx.Node) -> None:
        if node in self.quantizers:
            act = self.quantizers[node]
            self.quantized[node] = self._quantize(self._value(node), act, node.name)

    def _quantize(self, x: str, act: ActQuantizer, base: str) -> str:
        step = float(act.step)
        low, high = activation_range(act)
        signed = bool(act.signed)
        dtype = np.int8 if signed else np.uint8
        narrower = (low, high) != ((-128, 127) if signed else (0, 255))
        if narrower and signed:
            # Saturation of the 8-bit type would not stop at the quantiser's range. Signed:
            # a float Clip ahead, since onnxruntime turns int8 activations to uint8 only
            # where QuantizeLinear feeds DequantizeLinear directly.
            bounds = [
                self._float(f"{base}/min", low * step),
                self._float(f"{base}/max", high * step),
            ]
            x = self.graph.op("Clip", [x, *bounds], base)
        scale = self._float(f"{base}/scale", step)
        zero = self.graph.constant(f"{base}/zero", np.array(0, dtype=dtype))
        q = self.graph.op("QuantizeLinear", [x, scale, zero], base)
        if narrower and not signed:
            # Unsigned (4-bit activations): a uint8 Clip between Q and DQ, the same levels
            # (clamp(round(x / step))), and the producing Conv keeps its output Q, so
            # onnxruntime fuses it into QLinearConv (a float Clip ahead of Q prevents that).
            bounds = [
                self.graph.constant(f"{base}/{what}", np.array(value, dtype=dtype))
                for what, value in (("qmin", low), ("qmax", high))
            ]
            q = self.graph.op("Clip", [q, *bounds], base)
        dq = self.graph.op("DequantizeLinear", [q, scale, zero], base)
        self.steps[dq] = step
        return dq

    def _layer(self, node: fx.Node, layer: QuantLayer) -> str:
        base = node.name
        source = node.args[0]
        if not isinstance(source, fx.Node) or source not in self.quantized:
            raise IntegerConversionError(f"layer {node.target!r}: its input was not quantised")
        x = self.quantized[source]
        weights = integer_weights(layer)
        levels = weights.values.numpy()
        spread = weight_spread(levels, input_top(self.quantizers[source]))
        values = levels * spread.reshape(-1, *[1] * (levels.ndim - 1))
        step = (weights.step / spread).astype(np.float32)  # divided by powers of two: exact
        w = self._dequantized(values.astype(np.int8), step, f"{base}/weight")
        inputs = [x, w]
        _, bias = layer.effective_weight_bias()
        if bias is not None:
            inputs.append(self._bias(bias.detach().double().numpy(), self.steps[x] * step, base))
        if isinstance(layer, QuantConv2d):
            return emit_conv(self.graph, inputs, layer, base)
        return self.graph.op("Gemm", inputs, base, transB=1)

    def _dequantized(self, values: np.ndarray, scale: np.ndarray, base: str) -> str:
        q = self.graph.constant(base, values)
        s = self._float(f"{base}/scale", scale)
        zero = self.graph.constant(f"{base}/zero", np.zeros(len(scale), dtype=values.dtype))
        return self.graph.op("DequantizeLinear", [q, s, zero], base, axis=0)

    def _bias(self, bias: np.ndarray, scale: np.ndarray, base: str) -> str:
        levels = np.round(bias / scale.astype(np.float64))
        if np.abs(levels).max(initial=0) > _INT32_MAX:
            raise IntegerConversionError(f"layer {base!r}: bias does not fit int32 at its scale")
        return self._dequantized(levels.astype(np.int32), scale.astype(np.float32), f"{base}/bias")
