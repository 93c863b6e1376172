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
  zero point 128 (see :func:`weights_signed`). Layers whose input levels need more than
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
The same analysis proves that no int64 intermediate overflows (see :class:`RowPlan`). Where
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
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp

from mixq.errors import IntegerConversionError, MixqError
from mixq.export.fx_walk import FxWalker
from mixq.export.intervals import (
    RowPlan,
    accumulator_bounds,
    input_zero_point,
    spread,
    weight_arrays,
)
from mixq.export.onnx_graph import (
    INPUT_NAME,
    INT32_MAX,
    OPSET,
    RESHAPE_FUNCTIONS,
    RESHAPE_METHODS,
    TensorProto,
    emit_pad,
    emit_reshape,
    emit_slice,
    int_list,
    require_onnx,
    save_checked,
)
from mixq.integer.compile import IntegerModel
from mixq.integer.ops import (
    AddLevels,
    GlobalAvgPool,
    IntegerLayer,
    Lookup,
    MaxPool,
    QuantizeInput,
    Requantize,
    Rescale,
)
from mixq.integer.supported import ADD_FUNCTIONS, is_zero_pad

DOUBLE_EXACT = 2**53  # integers below this are exact in float64


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
    save_checked(proto, path)


class _IntegerExporter(FxWalker[_Int]):
    def __init__(self, graph_module: fx.GraphModule, layer_inputs: dict[str, str]) -> None:
        super().__init__(dict(graph_module.named_modules()))
        self.nodes = list(graph_module.graph.nodes)
        # Error messages name a layer as the user does: its input module's target -> name.
        self.layer_names = {target: name for name, target in layer_inputs.items()}

    def build(self, output_scale: float) -> Any:
        self.walk(self.nodes)
        doc = (
            "mixq integer model: int64 output; real values = output * mixq.output_scale. "
            "Standard ONNX ops only; see mixq.export.onnx_integer."
        )
        metadata = {"mixq.output_scale": repr(float(output_scale)), "mixq.format": "integer-1"}
        return self.graph.model(self.inputs, self.outputs, {"": OPSET}, doc, metadata)

    # -- dispatch -------------------------------------------------------------------------

    def _unsupported(self, node: fx.Node) -> MixqError:
        return IntegerConversionError(f"node {node.name} ({node.op}) does not export")

    def _module(self, node: fx.Node, module: nn.Module) -> None:
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
        elif isinstance(module, AddLevels):
            self.env[node] = self._add_levels(node, module)
        elif isinstance(module, Lookup):
            self.env[node] = self._lookup(self._int(node.args[0]), module, base)
        else:
            raise IntegerConversionError(f"{type(module).__name__} (node {base}) does not export")

    def _function(self, node: fx.Node) -> None:
        target = node.target
        if target is torch.clamp_min:
            self.env[node] = self._clamp_min(node)
        elif target in (torch.clamp, torch.clip):
            x = self._int(node.args[0])
            bounds = (*node.args[1:], None, None)[:2]
            low = _int_bound(node.kwargs.get("min", bounds[0]), node.name)
            high = _int_bound(node.kwargs.get("max", bounds[1]), node.name)
            self.env[node] = self._clip(x, low, high, node.name)
        elif target in (torch.cat, torch.concat):
            self.env[node] = self._cat(node)
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
            pad = int_list(node.args[1], "pad", node.name)
            name = emit_pad(self.graph, x.name, pad, rank, node.name)
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

    def _int(self, arg: Any) -> _Int:
        value = self._value(arg)
        if value.real:
            raise IntegerConversionError(f"{arg!r} is the float input; only QuantizeInput reads it")
        return value

    def _int64(self, base: str, values: list[int] | int, shape: tuple[int, ...] = ()) -> str:
        array = np.array(values, dtype=np.int64)
        return self.graph.constant(
            base, array.reshape(shape) if array.size > 1 else array.reshape(())
        )

    # -- operations -----------------------------------------------------------------------

    def _placeholder(self, node: fx.Node) -> None:
        dims: list[int | str] = ["batch", *self._shape(node)[1:]]
        self.inputs.append(self.graph.input_value(TensorProto.FLOAT, dims))
        self.env[node] = _Int(INPUT_NAME, 0, 0, real=True)

    def _output(self, node: fx.Node) -> None:
        value = node.args[0]
        x = self._int(value)
        dims: list[int | str] = ["batch", *self._shape(value)[1:]]
        self.outputs.append(self.graph.output_value(x.name, TensorProto.INT64, dims))

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
            RowPlan.make(*row)
            for row in zip(
                spread(lows, rows),
                spread(highs, rows),
                spread(multipliers, rows),
                spread(shifts, rows),
                spread(offsets, rows),
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
        zero_point = input_zero_point(low, high, name)
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
        w_values, w_zero = weight_arrays(weight, high + zero_point)
        if module.conv is not None:
            acc = self._conv(q, x_zero, w_values, w_zero, module.conv, zero_point, base)
        else:
            w = self.graph.constant(f"{base}/weight", np.ascontiguousarray(w_values.T))
            w_zp = self.graph.constant(f"{base}/w_zero_point", w_zero)
            acc = self.graph.op("MatMulInteger", [q, w, x_zero, w_zp], base)
        acc = self.graph.op("Cast", [acc], base, to=TensorProto.INT64)
        acc_lows, acc_highs = accumulator_bounds(weight, low, high)
        if min(acc_lows) < -INT32_MAX - 1 or max(acc_highs) > INT32_MAX:
            raise IntegerConversionError(f"layer {name!r}: accumulators could overflow int32")
        rows = weight.shape[0]
        shape = (1, rows, 1, 1) if module.conv is not None else (rows,)
        multipliers = spread(module.multiplier.tolist(), rows)
        if module.has_residual:
            # t = acc*M + R*M_res: the products first, then the rounding shift with m = 1.
            residual = self._int(node.args[1])
            m_res = int(module.residual_multiplier)
            acc = self.graph.op(
                "Mul", [acc, self._int64(f"{base}/multiplier", multipliers, shape)], base
            )
            r = self.graph.op("Mul", [residual.name, self._int64(f"{base}/m_res", m_res)], base)
            acc = self.graph.op("Add", [acc, r], base)
            acc_lows = [
                lo * m + residual.low * m_res for lo, m in zip(acc_lows, multipliers, strict=True)
            ]
            acc_highs = [
                hi * m + residual.high * m_res for hi, m in zip(acc_highs, multipliers, strict=True)
            ]
            multipliers = [1]
        y = self._dyadic(
            acc,
            acc_lows,
            acc_highs,
            multipliers,
            module.shift.tolist(),
            module.offset.tolist(),
            shape,
            base,
        )
        return self._clip(y, module.low, module.high, base)

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
        y = self._dyadic_scalar(summed, module.multiplier, module.shift, node.name)
        return self._clip(y, module.low, module.high, node.name)

    def _max_pool(self, x: _Int, module: MaxPool, base: str) -> _Int:
        if max(abs(x.low), abs(x.high)) >= DOUBLE_EXACT:
            raise IntegerConversionError(f"{base}: values too large for an exact double MaxPool")
        v = self.graph.op("Cast", [x.name], base, to=TensorProto.DOUBLE)
        # ONNX's MaxPool ignores padded positions, as the engine's lowest-int64 padding does.
        v = self.graph.op(
            "MaxPool",
            [v],
            base,
            kernel_shape=[module.kernel] * 2,
            strides=[module.stride] * 2,
            pads=[module.padding] * 4,
        )
        return _Int(self.graph.op("Cast", [v], base, to=TensorProto.INT64), x.low, x.high)

    def _clip(self, x: _Int, low: int | None, high: int | None, base: str) -> _Int:
        """``x`` clamped to ``[low, high]`` (``None``: that side unbounded)."""
        if low is None and high is None:
            return x
        bounds = [
            self._int64(f"{base}/{w}", v) if v is not None else ""
            for w, v in (("low", low), ("high", high))
        ]
        name = self.graph.op("Clip", [x.name, *bounds], base)
        return _Int(name, _clamp(x.low, low, high), _clamp(x.high, low, high))

    def _cat(self, node: fx.Node) -> _Int:
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(tensors, list | tuple) or not isinstance(dim, int):
            raise IntegerConversionError(f"{node.name}: cat needs a list of tensors and an int dim")
        parts = [self._int(p) for p in tensors]
        axis = dim % len(self._shape(node))
        name = self.graph.op("Concat", [p.name for p in parts], node.name, axis=axis)
        return _Int(name, min(p.low for p in parts), max(p.high for p in parts))

    def _add_levels(self, node: fx.Node, module: AddLevels) -> _Int:
        # clamp((a*m_a + b*m_b + 2^(c-1)) >> c): the products, then the rounding shift.
        a, b = (self._int(arg) for arg in node.args[:2])
        m_a, m_b, base = int(module.m_a), int(module.m_b), node.name
        left = self.graph.op("Mul", [a.name, self._int64(f"{base}/m_a", m_a)], base)
        right = self.graph.op("Mul", [b.name, self._int64(f"{base}/m_b", m_b)], base)
        total = self.graph.op("Add", [left, right], base)
        low, high = a.low * m_a + b.low * m_b, a.high * m_a + b.high * m_b
        y = self._dyadic(total, [low], [high], [1], [int(module.shift)], [0], (), base)
        return self._clip(y, module.low, module.high, base)

    def _lookup(self, x: _Int, module: Lookup, base: str) -> _Int:
        # The table's entry for each input level: Gather at x - low.
        index = self.graph.op("Sub", [x.name, self._int64(f"{base}/low", int(module.low))], base)
        table = self.graph.constant(f"{base}/table", module.table.numpy().astype(np.int64))
        name = self.graph.op("Gather", [table, index], base, axis=0)
        return _Int(name, int(module.table.min()), int(module.table.max()))

    def _reshape(self, node: fx.Node) -> _Int:
        x = self._value(node.args[0])
        return replace(x, name=emit_reshape(self.graph, x.name, self._shape(node), node.name))


def _int_bound(value: object, base: str) -> int | None:
    """A clamp bound of the integer graph: an int level, or None for unbounded."""
    if value is not None and not isinstance(value, int):
        raise IntegerConversionError(f"{base}: clamp bounds must be int levels, not {value!r}")
    return value


def _clamp(value: int, low: int | None, high: int | None) -> int:
    value = value if low is None else max(value, low)
    return value if high is None else min(value, high)
