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

import copy
import operator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from mixq.errors import IntegerConversionError, UnsupportedLayerError
from mixq.export.onnx_graph import (
    INPUT_NAME,
    OUTPUT_NAME,
    RESHAPE_FUNCTIONS,
    RESHAPE_METHODS,
    OnnxGraph,
    emit_pad,
    emit_reshape,
    emit_slice,
    int_list,
    require_onnx,
    tensor_shape,
)
from mixq.integer.compile import trace_with_shapes
from mixq.integer.supported import (
    ADD_FUNCTIONS,
    CAT_FUNCTIONS,
    CLAMP_FUNCTIONS,
    RELU6_FUNCTIONS,
    RELU_FUNCTIONS,
    TABLE_FUNCTIONS,
    is_zero_pad,
)
from mixq.integer.weights import integer_weights
from mixq.nn.layers import QUANT_LAYERS, QuantConv2d, QuantLayer
from mixq.schemes import Scheme

try:  # the optional "export" extra
    import onnx
    from onnx import TensorProto, helper
except ImportError:  # pragma: no cover - exercised only without the extra
    onnx = None  # type: ignore[assignment]

QONNX_DOMAIN = "qonnx.custom_op.general"
QONNX_OPSET = 1
ONNX_OPSET = 11  # qonnx.util.basic.get_preferred_onnx_opset()
_IR_VERSION = 7  # opset 11's IR

_PASS_MODULES = (nn.Identity, nn.Dropout)


def export_qonnx(quantized_model: nn.Module, example_input: Tensor, path: str | Path) -> None:
    """Write a quantised model (from :func:`mixq.quantize`, every layer ``fixed-k``) as QONNX.

    ``example_input`` fixes every shape, the batch included.
    """
    require_onnx()
    model = copy.deepcopy(quantized_model).eval()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)}
    if not layers:
        raise IntegerConversionError("the model has no quantised layer; run mixq.quantize first")
    bits = {name: uniform_bits(name, layer) for name, layer in layers.items()}
    graph = trace_with_shapes(model, example_input)
    proto = FakeQuantExporter(model, bits).build(graph)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


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


class FakeQuantExporter:
    """The fake-quantised model's fx graph in float ONNX ops; a quantised layer's input and
    weight quantisation are the subclass's (:meth:`_layer`): QONNX ``Quant`` here, QDQ in
    :mod:`mixq.export.qdq`."""

    def __init__(self, model: nn.Module, bits: dict[str, int]) -> None:
        self.modules = dict(model.named_modules())
        self.bits = bits
        self.graph = OnnxGraph()
        self.env: dict[fx.Node, str | None] = {}
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []

    def build(self, graph: fx.Graph) -> Any:
        for node in graph.nodes:
            self._convert(node)
        doc = "mixq fake-quantised model in QONNX: Quant nodes on inputs and weights."
        opsets = {"": ONNX_OPSET, QONNX_DOMAIN: QONNX_OPSET}
        metadata = {"mixq.format": "qonnx-1"}
        return self.graph.model(self.inputs, self.outputs, opsets, doc, metadata, _IR_VERSION)

    # -- dispatch -------------------------------------------------------------------------

    def _convert(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self._placeholder(node)
        elif node.op == "output":
            self._output(node)
        elif tensor_shape(node) is None:
            self.env[node] = None  # sizes and shapes: Reshape takes them from meta
        elif node.op == "call_module":
            self._module(node, self.modules[str(node.target)])
        elif node.op == "call_function":
            self._function(node)
        elif node.op == "call_method":
            self._method(node)
        else:
            raise self._unsupported(node)

    def _module(self, node: fx.Node, module: nn.Module) -> None:
        if isinstance(module, QUANT_LAYERS):
            self.env[node] = self._layer(node, module)
        elif isinstance(module, nn.ReLU):
            self.env[node] = self.graph.op("Relu", [self._name(node.args[0])], node.name)
        elif isinstance(module, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
            self.env[node] = self._clip(node, module.min_val, module.max_val)
        elif isinstance(module, nn.Hardswish | nn.SiLU | nn.Sigmoid):
            self.env[node] = self._table_function(node, type(module).__name__.lower())
        elif isinstance(module, _PASS_MODULES):
            self.env[node] = self._name(node.args[0])
        elif isinstance(module, nn.Flatten):
            self.env[node] = self._reshape(node)
        elif isinstance(module, nn.AdaptiveAvgPool2d) and _is_global(module.output_size):
            x = self._name(node.args[0])
            self.env[node] = self.graph.op("GlobalAveragePool", [x], node.name)
        elif isinstance(module, nn.MaxPool2d) and not module.return_indices:
            self.env[node] = self._max_pool(node, module)
        else:
            raise self._unsupported(node, type(module).__name__)

    def _function(self, node: fx.Node) -> None:
        target = node.target
        if target in RELU_FUNCTIONS:
            self.env[node] = self.graph.op("Relu", [self._name(node.args[0])], node.name)
        elif target in ADD_FUNCTIONS:
            self.env[node] = self._add(node)
        elif target in RELU6_FUNCTIONS:
            self.env[node] = self._clip(node, 0.0, 6.0)
        elif target in CLAMP_FUNCTIONS:
            self.env[node] = self._clip(node, *_clamp_bounds(node))
        elif target in CAT_FUNCTIONS:
            self.env[node] = self._cat(node)
        elif target in TABLE_FUNCTIONS:
            name = "sigmoid" if target in (torch.sigmoid, F.sigmoid) else target.__name__
            self.env[node] = self._table_function(node, name)
        elif target is operator.getitem:
            rank = len(self._shape(node.args[0]))
            x = self._name(node.args[0])
            self.env[node] = emit_slice(self.graph, x, node.args[1], rank, node.name)
        elif target is F.pad and is_zero_pad(node):
            rank = len(self._shape(node.args[0]))
            x = self._name(node.args[0])
            pad = int_list(node.args[1], "pad", node.name)
            self.env[node] = emit_pad(self.graph, x, pad, rank, node.name)
        elif target in RESHAPE_FUNCTIONS:
            self.env[node] = self._reshape(node)
        elif target is F.adaptive_avg_pool2d and _is_global(node.args[1]):
            x = self._name(node.args[0])
            self.env[node] = self.graph.op("GlobalAveragePool", [x], node.name)
        else:
            raise self._unsupported(node)

    def _method(self, node: fx.Node) -> None:
        if node.target == "relu":
            self.env[node] = self.graph.op("Relu", [self._name(node.args[0])], node.name)
        elif node.target == "add":
            self.env[node] = self._add(node)
        elif node.target in ("clamp", "clip"):
            self.env[node] = self._clip(node, *_clamp_bounds(node))
        elif node.target == "sigmoid":
            self.env[node] = self._table_function(node, "sigmoid")
        elif node.target in RESHAPE_METHODS:
            self.env[node] = self._reshape(node)
        elif node.target == "contiguous":
            self.env[node] = self._name(node.args[0])
        else:
            raise self._unsupported(node)

    def _unsupported(self, node: fx.Node, what: str | None = None) -> UnsupportedLayerError:
        name = what or getattr(node.target, "__name__", str(node.target))
        return UnsupportedLayerError(f"the QONNX export cannot write {name!r} (node {node.name})")

    # -- helpers --------------------------------------------------------------------------

    def _name(self, arg: Any) -> str:
        name = self.env.get(arg) if isinstance(arg, fx.Node) else None
        if name is None:
            raise IntegerConversionError(f"expected a tensor from the graph, got {arg!r}")
        return name

    def _shape(self, arg: Any) -> tuple[int, ...]:
        shape = tensor_shape(arg) if isinstance(arg, fx.Node) else None
        if shape is None:
            raise IntegerConversionError(f"shape of {arg!r} unknown")
        return shape

    def _float(self, base: str, value: np.ndarray | float) -> str:
        return self.graph.constant(base, np.asarray(value, dtype=np.float32))

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

    # -- operations -----------------------------------------------------------------------

    def _placeholder(self, node: fx.Node) -> None:
        if self.inputs:
            raise IntegerConversionError("the model has more than one input")
        shape = list(self._shape(node))
        self.inputs.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, shape))
        self.env[node] = INPUT_NAME

    def _output(self, node: fx.Node) -> None:
        x = self._name(node.args[0])
        self.graph.nodes.append(helper.make_node("Identity", [x], [OUTPUT_NAME], name="output"))
        shape = list(self._shape(node.args[0]))
        self.outputs.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, shape))

    def _layer(self, node: fx.Node, layer: QuantLayer) -> str:
        name = str(node.target)
        base = node.name
        x = self._name(node.args[0])
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
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise UnsupportedLayerError(
                f"the QONNX export supports explicit zero padding, not {layer.padding!r}/"
                f"{layer.padding_mode!r}"
            )
        inputs = [x, w]
        if bias is not None:
            inputs.append(self._float(f"{base}/bias", bias.detach().float().numpy()))
        pad_h, pad_w = (int(p) for p in layer.padding)
        return self.graph.op(
            "Conv",
            inputs,
            base,
            kernel_shape=[int(k) for k in layer.kernel_size],
            strides=[int(s) for s in layer.stride],
            pads=[pad_h, pad_w, pad_h, pad_w],
            dilations=[int(d) for d in layer.dilation],
            group=int(layer.groups),
        )

    def _add(self, node: fx.Node) -> str:
        args = [a for a in (*node.args, *node.kwargs.values()) if a is not None]
        if len(args) != 2 or not all(isinstance(a, fx.Node) for a in args):
            raise self._unsupported(node, "add with a constant or alpha")
        return self.graph.op("Add", [self._name(a) for a in args], node.name)

    def _clip(self, node: fx.Node, low: float | None, high: float | None) -> str:
        x = self._name(node.args[0])
        bounds = [
            self._float(f"{node.name}/{what}", value) if value is not None else ""
            for what, value in (("min", low), ("max", high))
        ]
        return self.graph.op("Clip", [x, *bounds], node.name)

    def _cat(self, node: fx.Node) -> str:
        tensors = node.args[0]
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if not isinstance(tensors, list | tuple) or not isinstance(dim, int):
            raise self._unsupported(node, "cat of a non-list")
        rank = len(self._shape(node))
        names = [self._name(t) for t in tensors]
        return self.graph.op("Concat", names, node.name, axis=dim % rank)

    def _table_function(self, node: fx.Node, function: str) -> str:
        # Float here: the quantised graph's Hardswish/SiLU/Sigmoid sit between quantisers.
        x = self._name(node.args[0])
        if function == "sigmoid":
            return self.graph.op("Sigmoid", [x], node.name)
        if function == "silu":
            return self.graph.op("Mul", [x, self.graph.op("Sigmoid", [x], node.name)], node.name)
        gate = self.graph.op("HardSigmoid", [x], node.name, alpha=1.0 / 6.0, beta=0.5)
        return self.graph.op("Mul", [x, gate], node.name)  # hardswish, before opset 14

    def _reshape(self, node: fx.Node) -> str:
        return emit_reshape(self.graph, self._name(node.args[0]), self._shape(node), node.name)

    def _max_pool(self, node: fx.Node, module: nn.MaxPool2d) -> str:
        kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        pad, dilation = _pair(module.padding), _pair(module.dilation)
        return self.graph.op(
            "MaxPool",
            [self._name(node.args[0])],
            node.name,
            kernel_shape=kernel,
            strides=stride,
            pads=pad + pad,
            dilations=dilation,
            ceil_mode=int(module.ceil_mode),
        )


def _clamp_bounds(node: fx.Node) -> tuple[float | None, float | None]:
    """The (min, max) of a clamp, clip or hardtanh call (None: unbounded on that side)."""
    names = ("min_val", "max_val") if node.target is F.hardtanh else ("min", "max")
    defaults = (-1.0, 1.0) if node.target is F.hardtanh else (None, None)
    values = []
    for index, (name, default) in enumerate(zip(names, defaults, strict=True)):
        value = node.kwargs.get(
            name, node.args[index + 1] if len(node.args) > index + 1 else default
        )
        if value is not None and not isinstance(value, int | float):
            raise UnsupportedLayerError(f"node {node.name}: clamp bounds must be numbers")
        values.append(None if value is None else float(value))
    return values[0], values[1]


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, tuple | list) else [int(value)] * 2


def _is_global(size: Any) -> bool:
    return size == 1 or (size is not None and tuple(size) == (1, 1))
