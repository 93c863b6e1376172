"""ONNX export of the integer model: standard ONNX ops only, the same integers as mixq's engine.

:func:`export_onnx` writes the :class:`~mixq.integer.compile.IntegerModel`'s graph op for op
(opset 17, IR version 8, built with ``onnx.helper``; no custom op, no torch.onnx), and
:func:`run_onnx` runs the file with onnxruntime. The output is the engine's int64 integers
(``model.forward_integer``), exactly; the file's metadata holds ``mixq.output_scale``.

Ops, per integer module:

- ``QuantizeInput`` (the only float op): ``Div`` by the float32 step, ``Clip``, ``Round``
  (half to even, as ``torch.round``), ``Cast`` to int64.
- ``IntegerLayer``: its input levels are moved to ``uint8`` (``Add`` 128 first when they are
  signed, with ``x_zero_point`` 128), then ``ConvInteger`` / ``MatMulInteger`` with int32
  accumulators, ``Cast`` to int64 and the per-row dyadic requantisation below. Weights are
  ``int8`` with zero point 0 when x86's u8*s8 kernel cannot saturate, else ``uint8`` with
  zero point 128 (see :func:`_weights_signed`). Layers whose input levels need more than
  8 bits or whose weight integers do not fit int8 are refused
  (:class:`~mixq.errors.IntegerConversionError`, naming the layer).
- ``Requantize`` / ``Rescale`` / ``GlobalAvgPool``: ``ReduceSum`` (pooling), the dyadic
  multiply, and ``Clip`` (requantisation to a layer's levels).
- ``MaxPool``: ``Cast`` to double, ``MaxPool``, ``Cast`` back (onnxruntime's MaxPool has no
  int64 kernel; integers below 2^53 are exact in double).
- ``torch.clamp_min`` -> ``Max`` (onnxruntime's Relu has no int64 kernel), ``+`` -> ``Add``,
  slicing -> ``Slice``, ``F.pad`` -> ``Pad``, reshapes -> ``Reshape``.

The dyadic multiply ``round(x * m / 2^c)`` (ties up) is ``floor((x*m + offset + 2^(c-1)) /
2^c)``. ONNX's BitShift takes unsigned types only and its integer ``Div`` truncates toward
zero, so each row ``r`` adds a constant ``T_r``, a multiple of ``2^c_r`` chosen at export time
from an exact interval analysis of every tensor, that makes the dividend non-negative; then
truncation is the floor, and ``floor((y + T_r) / 2^c_r) - T_r / 2^c_r = floor(y / 2^c_r)``.
The same analysis proves that no int64 intermediate overflows (see :class:`_RowPlan`). Where
it cannot (a worst case beyond int64, which the engine's own int64 arithmetic would share),
the floor is taken as ``(y - Mod(y, 2^c)) / 2^c`` instead, which repeats that arithmetic.

onnxruntime's ConvInteger pads with ``x_zero_point`` (the level 0), but the ONNX spec does
not say so, so signed inputs (zero point 128) are padded by an explicit ``Pad`` first.

PoT and SP2 rows run as ordinary int8 multiplies here: they are the same integers, so the
results are the same; executing them as one shift, or two shifts and an add, is the
reference engine's and the hardware's business, not ONNX's.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from mixq.errors import IntegerConversionError
from mixq.integer.compile import ADD_FUNCTIONS, IntegerModel, is_zero_pad
from mixq.integer.ops import (
    GlobalAvgPool,
    IntegerLayer,
    MaxPool,
    QuantizeInput,
    Requantize,
    Rescale,
)

try:  # the optional "export" extra
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # pragma: no cover - exercised only without the extra
    onnx = None

if TYPE_CHECKING:
    import onnxruntime

OPSET = 17
IR_VERSION = 8  # opset 17's IR, so onnxruntime >= 1.13 loads the files
INPUT_NAME = "input"
OUTPUT_NAME = "output"
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
DOUBLE_EXACT = 2**53  # integers below this are exact in float64
# x86 kernels without VNNI multiply u8 by s8 with vpmaddubsw, which adds pairs of products
# in int16 with saturation; a pair sum at most this large never saturates.
_PAIR_SUM_LIMIT = 2**15 - 1
_UINT8_ZERO = 128  # zero point of signed levels moved into uint8


def require_onnx() -> None:
    if onnx is None:
        raise ImportError("ONNX export needs onnx and onnxruntime: pip install 'mixq[export]'")


# -- a small graph builder, shared with the QONNX exporter ---------------------------------


class OnnxGraph:
    """Nodes and initializers of an ONNX graph under construction, with unique names."""

    def __init__(self) -> None:
        require_onnx()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = set()

    def fresh(self, base: str) -> str:
        name, index = base, 1
        while name in self._names:
            index += 1
            name = f"{base}_{index}"
        self._names.add(name)
        return name

    def constant(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], base: str, domain: str = "", **attrs: Any) -> str:
        """Add one single-output node; returns the output's name."""
        out = self.fresh(f"{base}/{op_type}")
        node = helper.make_node(op_type, inputs, [out], name=out, domain=domain or None, **attrs)
        self.nodes.append(node)
        return out

    def model(
        self,
        inputs: list[Any],
        outputs: list[Any],
        opsets: dict[str, int],
        doc: str,
        metadata: dict[str, str],
        ir_version: int = IR_VERSION,
    ) -> Any:
        graph = helper.make_graph(self.nodes, "mixq", inputs, outputs, self.initializers)
        imports = [helper.make_opsetid(domain, version) for domain, version in opsets.items()]
        model = helper.make_model(graph, opset_imports=imports, producer_name="mixq")
        model.ir_version = ir_version
        model.doc_string = doc
        helper.set_model_props(model, metadata)
        return model


def tensor_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The shape ShapeProp recorded for a node, or None where its value is not a tensor."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def emit_slice(graph: OnnxGraph, x: str, index: Any, rank: int, base: str) -> str:
    """``x[index]`` for an index of slices with positive steps (and ``...``)."""
    items = index if isinstance(index, tuple) else (index,)
    if any(item is Ellipsis for item in items):
        at = items.index(Ellipsis)
        fill = (slice(None),) * (rank - len(items) + 1)
        items = items[:at] + fill + items[at + 1 :]
    if not all(isinstance(item, slice) for item in items) or len(items) > rank:
        raise IntegerConversionError(f"{base}: only slicing with slices exports, not {index!r}")
    starts, ends, axes, steps = [], [], [], []
    for axis, item in enumerate(items):
        if item == slice(None):
            continue
        step = 1 if item.step is None else int(item.step)
        if step <= 0:
            raise IntegerConversionError(f"{base}: slices with step {step} do not export")
        starts.append(0 if item.start is None else int(item.start))
        ends.append(INT64_MAX if item.stop is None else int(item.stop))
        axes.append(axis)
        steps.append(step)
    if not axes:
        return x
    constants = [
        graph.constant(f"{base}/{what}", np.array(values, dtype=np.int64))
        for what, values in (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps))
    ]
    return graph.op("Slice", [x, *constants], base)


def emit_pad(
    graph: OnnxGraph, x: str, pad: list[int] | tuple[int, ...], rank: int, base: str
) -> str:
    """``F.pad(x, pad)`` with zeros: torch lists (begin, end) pairs from the last axis back."""
    begins, ends = [0] * rank, [0] * rank
    for pair in range(len(pad) // 2):
        begins[rank - 1 - pair] = int(pad[2 * pair])
        ends[rank - 1 - pair] = int(pad[2 * pair + 1])
    pads = graph.constant(f"{base}/pads", np.array(begins + ends, dtype=np.int64))
    return graph.op("Pad", [x, pads], base)  # no constant_value: zero of x's type


def emit_reshape(graph: OnnxGraph, x: str, shape: tuple[int, ...], base: str) -> str:
    """Reshape to ``shape`` (from ShapeProp) with dim 0 as -1, so any batch size runs."""
    target = list(shape)
    if target:
        target[0] = -1  # the batch folds into the first dimension, as in every reshape here
    shape_name = graph.constant(f"{base}/shape", np.array(target, dtype=np.int64))
    return graph.op("Reshape", [x, shape_name], base)


# Shape-only fx targets both exporters turn into ONNX Reshape.
RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}
RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze)


# -- the integer exporter ------------------------------------------------------------------


@dataclass(frozen=True)
class _Int:
    """An int64 tensor of the exported graph and the exact interval its values lie in."""

    name: str
    low: int
    high: int
    real: bool = False  # the float input, before QuantizeInput


def export_onnx(model: IntegerModel, example_input: Tensor, path: str | Path) -> None:
    """Write ``model`` as an ONNX file whose int64 output equals ``model.forward_integer``.

    ``example_input`` fixes every dimension but the batch, which stays free.
    """
    require_onnx()
    graph_module = copy.deepcopy(model.graph_module)  # ShapeProp writes into node.meta
    with torch.no_grad():
        ShapeProp(graph_module).propagate(example_input)
    exporter = _IntegerExporter(graph_module, model.layer_inputs)
    proto = exporter.build(model.output_scale)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


class _IntegerExporter:
    def __init__(self, graph_module: fx.GraphModule, layer_inputs: dict[str, str]) -> None:
        self.modules = dict(graph_module.named_modules())
        self.nodes = list(graph_module.graph.nodes)
        # Error messages name a layer as the user does: its input module's target -> name.
        self.layer_names = {target: name for name, target in layer_inputs.items()}
        self.graph = OnnxGraph()
        self.env: dict[fx.Node, _Int | None] = {}
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []

    def build(self, output_scale: float) -> Any:
        for node in self.nodes:
            self._convert(node)
        doc = (
            "mixq integer model: int64 output; real values = output * mixq.output_scale. "
            "Standard ONNX ops only; see mixq.integer.onnx_export."
        )
        metadata = {"mixq.output_scale": repr(float(output_scale)), "mixq.format": "integer-1"}
        return self.graph.model(self.inputs, self.outputs, {"": OPSET}, doc, metadata)

    # -- dispatch -------------------------------------------------------------------------

    def _convert(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self._placeholder(node)
        elif node.op == "output":
            self._output(node)
        elif tensor_shape(node) is None:
            self.env[node] = None  # sizes and shapes: the Reshape nodes take them from meta
        elif node.op == "call_module":
            self._module(node, self.modules[str(node.target)])
        elif node.op == "call_function":
            self._function(node)
        elif node.op == "call_method":
            self._method(node)
        else:
            raise IntegerConversionError(f"node {node.name} ({node.op}) does not export")

    def _module(self, node: fx.Node, module: torch.nn.Module) -> None:
        base = node.name
        if isinstance(module, QuantizeInput):
            self.env[node] = self._entrance(node, module)
        elif isinstance(module, IntegerLayer):
            self.env[node] = self._layer(node, module)
        elif isinstance(module, Requantize):
            self.env[node] = self._requantize(self._int(node.args[0]), module, base)
        elif isinstance(module, Rescale):
            x = self._int(node.args[0])
            self.env[node] = self._dyadic_scalar(x, module.multiplier, module.shift, base)
        elif isinstance(module, GlobalAvgPool):
            self.env[node] = self._global_pool(node, module)
        elif isinstance(module, MaxPool):
            self.env[node] = self._max_pool(self._int(node.args[0]), module, base)
        else:
            raise IntegerConversionError(f"{type(module).__name__} (node {base}) does not export")

    def _function(self, node: fx.Node) -> None:
        target = node.target
        if target is torch.clamp_min:
            self.env[node] = self._clamp_min(node)
        elif target in ADD_FUNCTIONS:
            self.env[node] = self._add(node)
        elif target is operator.getitem:
            x = self._value(node.args[0])
            rank = len(self._shape(node.args[0]))
            name = emit_slice(self.graph, x.name, node.args[1], rank, node.name)
            self.env[node] = replace(x, name=name)
        elif target is F.pad and is_zero_pad(node):
            x = self._value(node.args[0])
            rank = len(self._shape(node.args[0]))
            name = emit_pad(self.graph, x.name, node.args[1], rank, node.name)
            self.env[node] = replace(x, name=name, low=min(x.low, 0), high=max(x.high, 0))
        elif target in RESHAPE_FUNCTIONS:
            self.env[node] = self._reshape(node)
        else:
            name = getattr(target, "__name__", str(target))
            raise IntegerConversionError(f"function {name!r} (node {node.name}) does not export")

    def _method(self, node: fx.Node) -> None:
        if node.target in RESHAPE_METHODS:
            self.env[node] = self._reshape(node)
        elif node.target == "contiguous":
            self.env[node] = self._value(node.args[0])
        else:
            raise IntegerConversionError(
                f"method {node.target!r} (node {node.name}) does not export"
            )

    # -- helpers --------------------------------------------------------------------------

    def _value(self, arg: Any) -> _Int:
        value = self.env.get(arg) if isinstance(arg, fx.Node) else None
        if value is None:
            raise IntegerConversionError(f"expected a tensor from the graph, got {arg!r}")
        return value

    def _int(self, arg: Any) -> _Int:
        value = self._value(arg)
        if value.real:
            raise IntegerConversionError(f"{arg!r} is the float input; only QuantizeInput reads it")
        return value

    def _shape(self, arg: Any) -> tuple[int, ...]:
        shape = tensor_shape(arg) if isinstance(arg, fx.Node) else None
        if shape is None:
            raise IntegerConversionError(f"shape of {arg!r} unknown")
        return shape

    def _int64(self, base: str, values: list[int] | int, shape: tuple[int, ...] = ()) -> str:
        array = np.array(values, dtype=np.int64)
        return self.graph.constant(
            base, array.reshape(shape) if array.size > 1 else array.reshape(())
        )

    # -- operations -----------------------------------------------------------------------

    def _placeholder(self, node: fx.Node) -> None:
        if self.inputs:
            raise IntegerConversionError("the integer model has more than one input")
        shape = self._shape(node)
        dims: list[int | str] = ["batch", *shape[1:]]
        self.inputs.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, dims))
        self.env[node] = _Int(INPUT_NAME, 0, 0, real=True)

    def _output(self, node: fx.Node) -> None:
        value = node.args[0]
        x = self._int(value)
        dims: list[int | str] = ["batch", *self._shape(value)[1:]]
        self.graph.nodes.append(
            helper.make_node("Identity", [x.name], [OUTPUT_NAME], name="output")
        )
        self.outputs.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.INT64, dims))

    def _entrance(self, node: fx.Node, module: QuantizeInput) -> _Int:
        # float32 x / step, clamp, round half to even, as QuantizeInput computes it in torch.
        x = self._value(node.args[0])
        if not x.real:
            raise IntegerConversionError(f"node {node.name}: QuantizeInput reads integers")
        base = node.name
        step = self.graph.constant(f"{base}/step", module.step.numpy().astype(np.float32))
        low = self.graph.constant(f"{base}/low", np.array(module.low, dtype=np.float32))
        high = self.graph.constant(f"{base}/high", np.array(module.high, dtype=np.float32))
        v = self.graph.op("Div", [x.name, step], base)
        v = self.graph.op("Clip", [v, low, high], base)
        v = self.graph.op("Round", [v], base)
        q = self.graph.op("Cast", [v], base, to=TensorProto.INT64)
        return _Int(q, int(module.low), int(module.high))

    def _requantize(self, x: _Int, module: Requantize, base: str) -> _Int:
        y = self._dyadic_scalar(x, module.multiplier, module.shift, base)
        low, high = int(module.low), int(module.high)
        bounds = [self._int64(f"{base}/low", low), self._int64(f"{base}/high", high)]
        name = self.graph.op("Clip", [y.name, *bounds], base)
        return _Int(name, min(max(y.low, low), high), max(min(y.high, high), low))

    def _dyadic_scalar(self, x: _Int, multiplier: Tensor, shift: Tensor, base: str) -> _Int:
        return self._dyadic(
            x.name, [x.low], [x.high], [int(multiplier)], [int(shift)], [0], (), base
        )

    def _dyadic(
        self,
        x: str,
        lows: list[int],
        highs: list[int],
        multipliers: list[int],
        shifts: list[int],
        offsets: list[int],
        shape: tuple[int, ...],
        base: str,
    ) -> _Int:
        """``floor((x*m_r + offset_r + 2^(c_r-1)) / 2^c_r)`` per row ``r`` of an int64 tensor
        whose row ``r`` lies in ``[lows[r], highs[r]]`` (lists of length 1: one for all)."""
        rows = max(len(lows), len(multipliers))
        plans = [
            _RowPlan.make(*row)
            for row in zip(
                _spread(lows, rows),
                _spread(highs, rows),
                _spread(multipliers, rows),
                _spread(shifts, rows),
                _spread(offsets, rows),
                strict=True,
            )
        ]
        low = min(p.out_low for p in plans)
        high = max(p.out_high for p in plans)
        y = x
        if any(p.multiplier != 1 for p in plans):
            multiplier = self._int64(f"{base}/multiplier", [p.multiplier for p in plans], shape)
            y = self.graph.op("Mul", [y, multiplier], base)
        divisor = [p.divisor for p in plans]
        if all(p.proven for p in plans):
            if any(p.add_biased for p in plans):
                add = self._int64(f"{base}/offset", [p.add_biased for p in plans], shape)
                y = self.graph.op("Add", [y, add], base)
            if any(d != 1 for d in divisor):
                y = self.graph.op("Div", [y, self._int64(f"{base}/divisor", divisor, shape)], base)
            if any(p.k for p in plans):
                k = self._int64(f"{base}/bias", [p.k for p in plans], shape)
                y = self.graph.op("Sub", [y, k], base)
            return _Int(y, low, high)
        # No proof that the worst case fits int64: floor(y / d) = (y - (y mod d)) / d with
        # ONNX's floor Mod, which repeats the engine's own int64 arithmetic, wraparound
        # included (two's complement Mul and Add; the mod of a wrapped y is its shift's).
        if any(p.add for p in plans):
            y = self.graph.op(
                "Add", [y, self._int64(f"{base}/offset", [p.add for p in plans], shape)], base
            )
        if any(d != 1 for d in divisor):
            d_name = self._int64(f"{base}/divisor", divisor, shape)
            remainder = self.graph.op("Mod", [y, d_name], base, fmod=0)
            y = self.graph.op("Sub", [y, remainder], base)
            y = self.graph.op("Div", [y, d_name], base)
        return _Int(y, low, high)

    def _layer(self, node: fx.Node, module: IntegerLayer) -> _Int:
        name = self._layer_name(node)
        base = node.name
        x = self._int(node.args[0])
        low, high = min(x.low, 0), max(x.high, 0)  # zero: the padding value
        zero_point = _input_zero_point(low, high, name)
        weight = module.weight
        if int(weight.min()) < -128 or int(weight.max()) > 127:
            raise IntegerConversionError(
                f"layer {name!r}: weight integers span [{int(weight.min())}, "
                f"{int(weight.max())}], beyond int8; the ONNX export runs int8 weights only"
            )
        q = x.name
        if zero_point:
            q = self.graph.op("Add", [q, self._int64(f"{base}/zero_point", zero_point)], base)
        q = self.graph.op("Cast", [q], base, to=TensorProto.UINT8)
        x_zero = self.graph.constant(f"{base}/x_zero_point", np.array(zero_point, dtype=np.uint8))
        w_values, w_zero = _weight_arrays(weight, high + zero_point)
        if module.conv is not None:
            acc = self._conv(q, x_zero, w_values, w_zero, module.conv, zero_point, base)
        else:
            w = self.graph.constant(f"{base}/weight", np.ascontiguousarray(w_values.T))
            w_zp = self.graph.constant(f"{base}/w_zero_point", w_zero)
            acc = self.graph.op("MatMulInteger", [q, w, x_zero, w_zp], base)
        acc = self.graph.op("Cast", [acc], base, to=TensorProto.INT64)
        acc_lows, acc_highs = _accumulator_bounds(weight, low, high)
        if min(acc_lows) < -INT32_MAX - 1 or max(acc_highs) > INT32_MAX:
            raise IntegerConversionError(f"layer {name!r}: accumulators could overflow int32")
        rows = weight.shape[0]
        shape = (1, rows, 1, 1) if module.conv is not None else (rows,)
        return self._dyadic(
            acc,
            acc_lows,
            acc_highs,
            module.multiplier.tolist(),
            module.shift.tolist(),
            module.offset.tolist(),
            shape,
            base,
        )

    def _conv(
        self,
        q: str,
        x_zero: str,
        w_values: np.ndarray,
        w_zero: np.ndarray,
        conv: dict[str, Any],
        zero_point: int,
        base: str,
    ) -> str:
        pad_h, pad_w = (int(p) for p in conv["padding"])
        pads = [pad_h, pad_w, pad_h, pad_w]
        if zero_point and any(pads):
            # The padding must hold the zero point (level 0). onnxruntime's ConvInteger pads
            # with x_zero_point, but the ONNX spec does not say so: pad explicitly.
            pad_list = self.graph.constant(
                f"{base}/pads", np.array([0, 0, pad_h, pad_w, 0, 0, pad_h, pad_w], np.int64)
            )
            value = self.graph.constant(f"{base}/pad_value", np.array(zero_point, np.uint8))
            q = self.graph.op("Pad", [q, pad_list, value], base)
            pads = [0, 0, 0, 0]
        w = self.graph.constant(f"{base}/weight", w_values)
        w_zp = self.graph.constant(f"{base}/w_zero_point", w_zero)
        return self.graph.op(
            "ConvInteger",
            [q, w, x_zero, w_zp],
            base,
            kernel_shape=list(w_values.shape[2:]),
            strides=[int(s) for s in conv["stride"]],
            pads=pads,
            dilations=[int(d) for d in conv["dilation"]],
            group=int(conv["groups"]),
        )

    def _layer_name(self, node: fx.Node) -> str:
        source = node.args[0]
        if isinstance(source, fx.Node) and str(source.target) in self.layer_names:
            return self.layer_names[str(source.target)]
        return str(node.target)

    def _clamp_min(self, node: fx.Node) -> _Int:
        x = self._int(node.args[0])
        bound = node.args[1] if len(node.args) > 1 else node.kwargs.get("min")
        if not isinstance(bound, int):
            raise IntegerConversionError(
                f"node {node.name}: clamp_min by {bound!r} does not export"
            )
        name = self.graph.op("Max", [x.name, self._int64(f"{node.name}/min", bound)], node.name)
        return _Int(name, max(x.low, bound), max(x.high, bound))

    def _add(self, node: fx.Node) -> _Int:
        left, right = (self._int(a) for a in node.args[:2])
        # A worst case beyond int64 wraps in the engine and in onnxruntime alike; the
        # requantisation that follows then takes its unproven (Mod) form.
        low, high = left.low + right.low, left.high + right.high
        return _Int(self.graph.op("Add", [left.name, right.name], node.name), low, high)

    def _global_pool(self, node: fx.Node, module: GlobalAvgPool) -> _Int:
        x = self._int(node.args[0])
        shape = self._shape(node.args[0])
        positions = shape[-1] * shape[-2]
        axes = self._int64(f"{node.name}/axes", [-2, -1], (2,))
        total = self.graph.op("ReduceSum", [x.name, axes], node.name, keepdims=int(module.keepdim))
        summed = _Int(total, x.low * positions, x.high * positions)
        return self._dyadic_scalar(summed, module.multiplier, module.shift, node.name)

    def _max_pool(self, x: _Int, module: MaxPool, base: str) -> _Int:
        if max(abs(x.low), abs(x.high)) >= DOUBLE_EXACT:
            raise IntegerConversionError(f"{base}: values too large for an exact double MaxPool")
        v = self.graph.op("Cast", [x.name], base, to=TensorProto.DOUBLE)
        v = self.graph.op(
            "MaxPool", [v], base, kernel_shape=[module.kernel] * 2, strides=[module.stride] * 2
        )
        return _Int(self.graph.op("Cast", [v], base, to=TensorProto.INT64), x.low, x.high)

    def _reshape(self, node: fx.Node) -> _Int:
        x = self._value(node.args[0])
        return replace(x, name=emit_reshape(self.graph, x.name, self._shape(node), node.name))


@dataclass(frozen=True)
class _RowPlan:
    """One row's ``floor((x*m + offset + half) / d)``, ``d = 2^c``, as ONNX computes it.

    Proof of exactness: with ``y = x*m + offset + half`` (``m >= 0``) in ``[y_lo, y_hi]``,
    ``T = k*d`` with ``k = max(0, -floor(y_lo / d))`` makes ``y + T >= 0``, so ONNX's
    truncating ``Div`` floors; ``T`` is a multiple of ``d``, so ``floor((y + T) / d) - k =
    floor(y / d)``. ``proven`` says every int64 intermediate (``x*m``, ``offset + half + T``,
    ``y + T``) lies within int64 for every input in ``[low, high]``.
    """

    multiplier: int
    add: int  # offset + half
    add_biased: int  # offset + half + T
    divisor: int
    k: int
    out_low: int
    out_high: int
    proven: bool

    @classmethod
    def make(cls, low: int, high: int, m: int, c: int, offset: int) -> _RowPlan:
        m, c, offset = _strip_twos(m, c, offset)
        d = 1 << c
        half = d >> 1
        y_low, y_high = low * m + offset + half, high * m + offset + half
        k = max(0, -(y_low // d))
        add_biased = offset + half + k * d
        proven = (
            max(abs(low), abs(high)) * m <= INT64_MAX
            and y_high + k * d <= INT64_MAX
            and abs(add_biased) <= INT64_MAX
        )
        return cls(m, offset + half, add_biased, d, k, y_low // d, y_high // d, proven)


def _strip_twos(m: int, c: int, offset: int) -> tuple[int, int, int]:
    """The same ``round((x*m + offset) / 2^c)`` with the powers of two that ``m`` and
    ``offset`` share with ``2^c`` cancelled, so products stay small (``1/64`` is ``m = 2^30,
    c = 36`` in the engine, ``m = 1, c = 6`` here). Exact: with ``m = 2^t m'`` and
    ``offset = 2^t o'`` (``t <= c``), ``x*m + offset + 2^(c-1) = 2^t (x m' + o' + 2^(c-t-1))``
    for ``t < c``, and for ``t = c`` the half of ``2^c`` is below one output step."""
    t = min(_twos(m), _twos(offset), c)
    return m >> t, c - t, offset >> t


def _twos(value: int) -> int:
    """Trailing zero bits of ``value`` (a large number for zero, which has all of them)."""
    return (value & -value).bit_length() - 1 if value else 1 << 30


def _spread(values: list[int], rows: int) -> list[int]:
    return [int(v) for v in values] * rows if len(values) == 1 else [int(v) for v in values]


def _input_zero_point(low: int, high: int, layer: str) -> int:
    """0 for levels that fit uint8 as they are, 128 for signed levels that fit int8."""
    if low >= 0 and high <= 255:
        return 0
    if low >= -_UINT8_ZERO and high <= 127:
        return _UINT8_ZERO
    raise IntegerConversionError(
        f"layer {layer!r}: input levels span [{low}, {high}], more than 8 bits; "
        "ConvInteger/MatMulInteger take 8-bit inputs"
    )


def _weights_signed(weight: Tensor, x_max: int) -> bool:
    """Whether u8*s8 kernels run this layer exactly: x86 CPUs without VNNI add two u8*s8
    products in int16 with saturation, so int8 weights need ``2 * x_max * |w|max`` below
    2^15 (onnxruntime's documented "reduce range" concern); otherwise the weights go to
    uint8 with zero point 128, whose u8*u8 kernels widen to int16 first and are exact."""
    return 2 * x_max * int(weight.abs().max()) <= _PAIR_SUM_LIMIT


def _weight_arrays(weight: Tensor, x_max: int) -> tuple[np.ndarray, np.ndarray]:
    values = weight.numpy()
    if _weights_signed(weight, x_max):
        return values.astype(np.int8), np.array(0, dtype=np.int8)
    return (values + _UINT8_ZERO).astype(np.uint8), np.array(_UINT8_ZERO, dtype=np.uint8)


def _accumulator_bounds(weight: Tensor, low: int, high: int) -> tuple[list[int], list[int]]:
    """Exact per-row extremes of ``sum_j x_j * w_rj`` for inputs in ``[low, high]``."""
    rows = weight.reshape(weight.shape[0], -1)
    positive = rows.clamp_min(0).sum(dim=1).tolist()
    negative = rows.clamp_max(0).sum(dim=1).tolist()
    lows = [low * p + high * n for p, n in zip(positive, negative, strict=True)]
    highs = [high * p + low * n for p, n in zip(positive, negative, strict=True)]
    return lows, highs


# -- running -------------------------------------------------------------------------------


def onnx_session(path: str | Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session for an exported file (``threads``: intra-op threads)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def run_onnx(model: str | Path | onnxruntime.InferenceSession, x: Tensor) -> Tensor:
    """Run an exported file (or a session from :func:`onnx_session`) on ``x``; returns the
    output tensor (int64 for :func:`export_onnx` files)."""
    session = model if not isinstance(model, str | Path) else onnx_session(model)
    feed = {session.get_inputs()[0].name: x.detach().cpu().float().numpy()}
    (out,) = session.run(None, feed)
    return torch.from_numpy(np.asarray(out))
