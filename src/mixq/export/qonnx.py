"""QONNX export (FINN's format) of a fake-quantised model whose every layer is uniform.

QONNX writes quantisation as ``Quant`` nodes (domain ``qonnx.custom_op.general``, inputs
``x, scale, zeropt, bitwidth``, attributes ``signed, narrow, rounding_mode``) computing
``scale * round(clip(x / scale + zeropt, lo, hi)) - zeropt * scale``: integer levels times a
scale, one bit width per tensor. That is mixq's ``fixed-k`` grid exactly (levels
``-(2^(k-1)-1) .. 2^(k-1)-1``, a narrow signed range, per-row scale ``alpha_r /
(2^(k-1)-1)``), so a model exports when each layer's rows are all ``fixed-k`` (``k`` may
differ between layers). PoT and SP2 grids are not uniform, and rows of different bits
cannot share one ``Quant``: both are refused with
:class:`~mixq.errors.IntegerConversionError`.

The graph is the fake-quantised model in float (BatchNorm folded, as the integer engine
folds it): a ``Quant`` on each quantised layer's input activation (its calibrated step,
``signed``/``narrow`` for signed inputs, ``ROUND`` = half to even like ``torch.round``),
the layer's weights as float initializers ``w_int * scale_r`` followed by a per-row
``Quant``, then ``Conv`` or ``MatMul`` (+ ``Add`` for the bias), ``Relu``, ``Add``,
``GlobalAveragePool``, ``MaxPool``, ``Slice``, ``Pad`` and ``Reshape``. The default-domain
opset is 11 (QONNX's preferred), and the batch size is the example input's, as FINN
expects static shapes; tensor shapes are left to ``qonnx``'s ``InferShapes``, the first step
of any FINN flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import Tensor

from mixq.errors import IntegerConversionError
from mixq.export.fake_quant_graph import FakeQuantExporter, copy_quantized
from mixq.export.onnx_graph import emit_conv, save_checked
from mixq.integer.compile import trace_with_shapes
from mixq.integer.weights import integer_weights
from mixq.nn.layers import QuantConv2d, QuantLayer
from mixq.schemes import Scheme

QONNX_DOMAIN = "qonnx.custom_op.general"
QONNX_OPSET = 1
ONNX_OPSET = 11  # qonnx.util.basic.get_preferred_onnx_opset()
_IR_VERSION = 7  # opset 11's IR


def export_qonnx(quantized_model: torch.nn.Module, example_input: Tensor, path: str | Path) -> None:
    """Write a quantised model (from :func:`mixq.quantize`, every layer ``fixed-k``) as QONNX.

    ``example_input`` fixes every shape, the batch included.
    """
    model, layers = copy_quantized(quantized_model)
    bits = {name: uniform_bits(name, layer) for name, layer in layers.items()}
    graph = trace_with_shapes(model, example_input)
    save_checked(_QonnxExporter(model, bits).build(graph), path)


def uniform_bits(name: str, layer: QuantLayer) -> int:
    """The ``k`` of a layer whose rows are all ``fixed-k``; raises for anything else."""
    quantizer = layer.weight_quant
    used = sorted({int(c) for c in quantizer.row_codes.tolist()})
    candidates = [quantizer.candidates[code] for code in used]
    other = [str(c) for c in candidates if c.scheme is not Scheme.FIXED]
    if other:
        raise IntegerConversionError(
            f"layer {name!r} has {', '.join(other)} rows: QONNX's Quant is uniform (integer "
            "levels times one scale), so PoT and SP2 grids cannot be written as Quant nodes"
        )
    if len(candidates) != 1:
        names = ", ".join(str(c) for c in candidates)
        raise IntegerConversionError(
            f"layer {name!r} mixes {names} rows: QONNX's Quant is uniform with one bit width "
            "per tensor, so rows of different bits cannot share it"
        )
    act = layer.act_quant
    if act is not None and (not bool(act.calibrated) or not act.enabled):
        raise IntegerConversionError(f"layer {name!r}: input quantiser not calibrated/on")
    return candidates[0].bits


class _QonnxExporter(FakeQuantExporter):
    format_name = "QONNX"

    def __init__(self, model: torch.nn.Module, bits: dict[str, int]) -> None:
        super().__init__(model)
        self.bits = bits

    def build(self, graph: fx.Graph) -> Any:
        self.walk(graph.nodes)
        doc = "mixq fake-quantised model in QONNX: Quant nodes on inputs and weights."
        opsets = {"": ONNX_OPSET, QONNX_DOMAIN: QONNX_OPSET}
        metadata = {"mixq.format": "qonnx-1"}
        return self.graph.model(self.inputs, self.outputs, opsets, doc, metadata, _IR_VERSION)

    def _quant(self, x: str, scale: np.ndarray | float, bits: int, signed: bool, base: str) -> str:
        # narrow = signed: mixq's signed grids are symmetric, -(2^(k-1)-1) .. 2^(k-1)-1.
        inputs = [
            x,
            self._float(f"{base}/scale", scale),
            self._float(f"{base}/zeropt", 0.0),
            self._float(f"{base}/bitwidth", float(bits)),
        ]
        return self.graph.op(
            "Quant",
            inputs,
            base,
            domain=QONNX_DOMAIN,
            signed=int(signed),
            narrow=int(signed),
            rounding_mode="ROUND",
        )

    def _layer(self, node: fx.Node, layer: QuantLayer) -> str:
        name = str(node.target)
        base = node.name
        x = self._value(node.args[0])
        act = layer.act_quant
        if act is not None:
            step = act.step.numpy().astype(np.float32)
            x = self._quant(x, step, act.bits, bool(act.signed), f"{base}/input")
        weights = integer_weights(layer)
        bits = self.bits[name]
        scale = weights.step.astype(np.float32)
        values = weights.values.double().numpy()
        _, bias = layer.effective_weight_bias()
        if isinstance(layer, QuantConv2d):
            w = values * weights.step.reshape(-1, 1, 1, 1)
            w_q = self._weight(w, scale.reshape(-1, 1, 1, 1), bits, base)
            return self._conv(x, w_q, bias, layer, base)
        # MatMul takes (in, out): the per-row scale of the (out, in) weight is per column.
        w = (values * weights.step.reshape(-1, 1)).T
        w_q = self._weight(w, scale.reshape(1, -1), bits, base)
        y = self.graph.op("MatMul", [x, w_q], base)
        if bias is not None:
            b = self._float(f"{base}/bias", bias.detach().float().numpy())
            y = self.graph.op("Add", [y, b], base)
        return y

    def _weight(self, w: np.ndarray, scale: np.ndarray, bits: int, base: str) -> str:
        # w holds each row's integers times its scale, so Quant gives back those integers.
        w_name = self.graph.constant(f"{base}/weight", np.ascontiguousarray(w, dtype=np.float32))
        return self._quant(w_name, scale, bits, True, f"{base}/weight")

    def _conv(self, x: str, w: str, bias: Tensor | None, layer: QuantConv2d, base: str) -> str:
        inputs = [x, w]
        if bias is not None:
            inputs.append(self._float(f"{base}/bias", bias.detach().float().numpy()))
        return emit_conv(self.graph, inputs, layer, base)
