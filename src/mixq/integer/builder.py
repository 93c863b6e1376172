"""Where the quantisers and requantisation points of the integer model sit.

Every tensor of the integer graph is the integer levels of one *grid* (a step and a range).
A quantised layer's output stays *pending* while it meets ops the fused layer can absorb:
ReLU/ReLU6/clamp (narrow the output range) and one residual addition of another grid's
levels. It becomes levels (one :class:`~mixq.integer.ops.IntegerLayer`) on the grid of the
quantiser that consumes it next: the finest input quantiser among the quantised layers it
reaches through level-preserving ops (clamps, reshapes, zero padding, max and average
pooling), so a tensor that feeds both a convolution and a residual addition carries that
convolution's input levels on both paths. No fractional bits are carried between
quantisers: each requantisation is one dyadic multiply, add and shift.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from mixq.errors import IntegerConversionError
from mixq.integer.dyadic import MULTIPLIER_BITS, Dyadic
from mixq.integer.ops import (
    AddLevels,
    Engine,
    GlobalAvgPool,
    IntegerLayer,
    Lookup,
    MaxPool,
    QuantizeInput,
    Requantize,
    layer_engine,
)
from mixq.integer.supported import (
    ADD_FUNCTIONS,
    CAT_FUNCTIONS,
    CLAMP_FUNCTIONS,
    CLAMP_METHODS,
    CLAMP_MODULES,
    RELU6_FUNCTIONS,
    RELU_FUNCTIONS,
    SHAPE_FUNCTIONS,
    SHAPE_METHODS,
    SHAPE_MODULES,
    TABLE_FUNCTIONS,
    TABLE_METHODS,
    TABLE_MODULES,
    is_global,
)
from mixq.integer.weights import IntegerWeights, integer_weights
from mixq.nn.act_quant import ActQuantizer
from mixq.nn.layers import QUANT_LAYERS, QuantConv2d, QuantLayer

INT32_LIMIT = 2**31 - 1
# |acc * m + offset + residual * m_res + 2^(c-1)| stays below this (int64 with room).
_SUM_LIMIT = 2.0**62
# Residual tensors: int16 levels, 12 bits of them up to the consumer's clip.
RESIDUAL_LIMIT = 2**15 - 1
RESIDUAL_EXTRA_BITS = 12
# The input grid of a lookup table with no level input: signed 8-bit levels.
_TABLE_LOW, _TABLE_HIGH = -128, 127
_SIGMOID_STEP = 1.0 / 16  # inputs -8..7.94: sigmoid is within 2^-11 of 0 or 1 beyond


@dataclass(frozen=True)
class Grid:
    """A quantiser's levels: real value ``level * step``, levels ``low..high``."""

    step: float
    low: int
    high: int


@dataclass(frozen=True)
class _Levels:
    node: fx.Node
    grid: Grid


@dataclass(frozen=True)
class _Float:
    node: fx.Node


@dataclass(frozen=True)
class _Pending:
    """A quantised layer's output not yet requantised: what the fused layer will absorb."""

    name: str
    layer: QuantLayer
    weights: IntegerWeights
    source: fx.Node  # the original node whose value this is
    inputs: _Levels
    residual: _Levels | None = None
    clamp_low: float = -math.inf  # real bounds of ReLU/ReLU6/clamp after the layer
    clamp_high: float = math.inf


_Value = _Levels | _Float | _Pending


def grid_of(act: ActQuantizer) -> Grid:
    """The grid of a quantised layer's input quantiser."""
    high = act.levels
    return Grid(float(act.step), -high if act.signed else 0, high)


def build_integer_graph(
    model: nn.Module, graph: fx.Graph, engine: Engine
) -> tuple[fx.GraphModule, float, dict[str, str]]:
    """The integer graph of ``model``'s traced ``graph`` (shapes propagated), its output
    scale and, per quantised layer, the module that produces its input levels."""
    builder = _Builder(model, graph, engine)
    for node in graph.nodes:
        builder.convert(node)
    module = fx.GraphModule(builder.root, builder.graph, class_name="IntegerGraph")
    return module, builder.output_scale, builder.layer_inputs


class _Builder:
    def __init__(self, model: nn.Module, graph: fx.Graph, engine: Engine) -> None:
        self.modules = dict(model.named_modules())
        self.engine: Engine = engine
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.env: dict[fx.Node, _Value] = {}
        self.layer_inputs: dict[str, str] = {}
        self.output_scale = 1.0

    # -- dispatch -------------------------------------------------------------------------

    def convert(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self.env[node] = _Float(self.graph.placeholder(node.name))
        elif node.op == "output":
            self._output(node)
        elif node.op == "call_module":
            self._call_module(node, self.modules[str(node.target)])
        elif node.op == "call_function":
            self._call_function(node)
        else:
            self._call_method(node)

    def _call_module(self, node: fx.Node, module: nn.Module) -> None:
        if isinstance(module, QUANT_LAYERS):
            self._quant_layer(node, module)
        elif isinstance(module, CLAMP_MODULES):
            self._clamp(node, *_module_bounds(module))
        elif isinstance(module, nn.Flatten):
            self._copy_levels(
                node, lambda v: (torch.flatten, (v, module.start_dim, module.end_dim))
            )
        elif isinstance(module, SHAPE_MODULES):  # Identity, Dropout in eval mode
            self._identity(node)
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            self._global_pool(node, keepdim=True)
        elif isinstance(module, nn.MaxPool2d):
            self._max_pool(node, module)
        elif isinstance(module, TABLE_MODULES):
            self._table(node, type(module).__name__.lower())
        else:  # check_supported ran before
            raise IntegerConversionError(f"unexpected module {type(module).__name__}")

    def _call_function(self, node: fx.Node) -> None:
        target = node.target
        if target in RELU_FUNCTIONS:
            self._clamp(node, 0.0, math.inf)
        elif target in RELU6_FUNCTIONS:
            self._clamp(node, 0.0, 6.0)
        elif target in CLAMP_FUNCTIONS:
            self._clamp(node, *_call_bounds(node))
        elif target in ADD_FUNCTIONS:
            self._add(node)
        elif target in CAT_FUNCTIONS:
            self._cat(node)
        elif target is F.pad or target in SHAPE_FUNCTIONS:
            self._copy(node)
        elif target is F.adaptive_avg_pool2d and is_global(node.args[1]):
            self._global_pool(node, keepdim=True)
        elif target in TABLE_FUNCTIONS:
            self._table(node, getattr(target, "__name__", "sigmoid"))
        else:
            raise IntegerConversionError(f"unexpected function {target}")

    def _call_method(self, node: fx.Node) -> None:
        if node.target == "relu":
            self._clamp(node, 0.0, math.inf)
        elif node.target in CLAMP_METHODS:
            self._clamp(node, *_call_bounds(node))
        elif node.target == "add":
            self._add(node)
        elif node.target in TABLE_METHODS:
            self._table(node, str(node.target))
        elif node.target in SHAPE_METHODS:
            self._copy(node)
        else:
            raise IntegerConversionError(f"unexpected method {node.target}")

    # -- helpers --------------------------------------------------------------------------

    def _node(self, arg: Any) -> fx.Node:
        """``arg`` as a graph node that holds a value."""
        if not isinstance(arg, fx.Node) or arg not in self.env:
            raise IntegerConversionError(f"expected a tensor from the graph, got {arg!r}")
        return arg

    def _value(self, arg: Any) -> _Value:
        return self.env[self._node(arg)]

    def _emitted(self, node: fx.Node) -> _Levels | _Float:
        """The value of a node already emitted into the new graph (never a pending layer)."""
        value = self.env[node]
        assert not isinstance(value, _Pending), f"{node.name}: pending layer not materialised"
        return value

    def _call(self, name: str, module: nn.Module, *args: Any) -> fx.Node:
        base = name.replace(".", "_") or "module"
        unique, index = base, 1
        while hasattr(self.root, unique):
            index += 1
            unique = f"{base}_{index}"
        self.root.add_module(unique, module)
        return self.graph.call_module(unique, args)

    def _levels(self, arg: Any) -> _Levels | _Float:
        """The value of ``arg`` as levels (a pending layer requantised to its next grid)."""
        value = self._value(arg)
        if isinstance(value, _Pending):
            grid = self._target(value.source)
            if grid is not None and self._feeds_add(value.source):
                grid = residual_grid(grid)
            return self._materialise(value, grid)
        return value

    def _feeds_add(self, node: fx.Node) -> bool:
        queue, seen = deque(node.users), set()
        while queue:
            user = queue.popleft()
            if user in seen:
                continue
            seen.add(user)
            if (user.op == "call_function" and user.target in ADD_FUNCTIONS) or (
                user.op == "call_method" and user.target == "add"
            ):
                return True
            module = self.modules.get(str(user.target)) if user.op == "call_module" else None
            if not isinstance(module, QUANT_LAYERS) and _preserves_levels(user, module):
                queue.extend(user.users)
        return False

    def _on_grid(self, value: _Levels | _Float, grid: Grid, name: str) -> fx.Node:
        """Levels of ``value`` on ``grid``: the entrance, a requantisation or as they are."""
        if isinstance(value, _Float):
            act_step = torch.tensor(grid.step, dtype=torch.float32)
            return self._call(
                f"{name}.input", QuantizeInput(act_step, grid.low, grid.high), value.node
            )
        if value.grid == grid:
            return value.node
        d = _dyadic(value.grid.step / grid.step, max(abs(value.grid.low), abs(value.grid.high)))
        module = Requantize(int(d.multiplier[0]), int(d.shift[0]), grid.low, grid.high)
        return self._call(f"{name}.input", module, value.node)

    def _target(self, node: fx.Node) -> Grid | None:
        """The finest input grid of the quantised layers ``node``'s value reaches through
        level-preserving ops (None: it reaches none, e.g. the network's output)."""
        grids: list[Grid] = []
        queue, seen = deque(node.users), set()
        while queue:
            user = queue.popleft()
            if user in seen:
                continue
            seen.add(user)
            module = self.modules.get(str(user.target)) if user.op == "call_module" else None
            if isinstance(module, QUANT_LAYERS):
                if module.act_quant is not None:
                    grids.append(grid_of(module.act_quant))
            elif _preserves_levels(user, module):
                queue.extend(user.users)
        return min(grids, key=lambda g: g.step) if grids else None

    # -- quantised layers -----------------------------------------------------------------

    def _quant_layer(self, node: fx.Node, layer: QuantLayer) -> None:
        name = str(node.target)
        act = layer.act_quant
        if act is None:
            raise IntegerConversionError(
                f"layer {name!r} has a float input (act_bits 0); the integer engine needs "
                "every quantised layer's input quantised"
            )
        if not act.enabled:  # calibration was checked before tracing
            raise IntegerConversionError(f"layer {name!r}: input quantiser switched off")
        grid = grid_of(act)
        q_node = self._on_grid(self._levels(node.args[0]), grid, name)
        weights = integer_weights(layer)
        self.env[node] = _Pending(name, layer, weights, node, _Levels(q_node, grid))

    def _materialise(self, pending: _Pending, grid: Grid | None) -> _Levels:
        """Emit the pending layer as one fused op whose output lies on ``grid``."""
        layer, weights, inputs = pending.layer, pending.weights, pending.inputs.grid
        acc_bound = max(abs(inputs.low), abs(inputs.high)) * weights.row_bound().astype(float)
        if acc_bound.max() > INT32_LIMIT:
            raise IntegerConversionError(
                f"layer {pending.name!r}: accumulators can reach {acc_bound.max():.3g}, "
                "beyond int32"
            )
        acc_scale = inputs.step * weights.step
        _, bias = layer.effective_weight_bias()
        bias_real = bias.detach().double().numpy() if bias is not None else np.zeros(weights.rows)
        residual = pending.residual
        if grid is None:  # the network's output: int32-range integers at a fine scale
            bound = float((acc_bound * acc_scale + np.abs(bias_real)).max())
            if residual is not None:
                bound += residual.grid.step * max(abs(residual.grid.low), residual.grid.high)
            step = max(float(acc_scale.min()), bound / INT32_LIMIT)
            grid = Grid(step, -INT32_LIMIT, INT32_LIMIT)
        low, high = _clamped_range(grid, pending.clamp_low, pending.clamp_high)
        res_ratio = residual.grid.step / grid.step if residual is not None else None
        res_bound = max(abs(residual.grid.low), residual.grid.high) if residual else 0
        m, c, offset, m_res = _requantizer(
            acc_scale / grid.step, bias_real / grid.step, acc_bound, res_ratio, res_bound
        )
        conv = _conv_params(layer) if isinstance(layer, QuantConv2d) else None
        engine, int8_offset = layer_engine(
            weights.values, conv, inputs.low, inputs.high, self.engine
        )
        module = IntegerLayer(
            weights, conv, m, c, offset, engine, int8_offset,
            low=low, high=high, residual_multiplier=m_res,
        )  # fmt: skip
        args = [pending.inputs.node] + ([residual.node] if residual is not None else [])
        new = self._call(pending.name, module, *args)
        self.layer_inputs[pending.name] = str(new.target)
        levels = _Levels(new, Grid(grid.step, low, high))
        self.env[pending.source] = levels
        return levels

    # -- operations -----------------------------------------------------------------------

    def _clamp(self, node: fx.Node, low: float, high: float) -> None:
        value = self._value(node.args[0])
        if isinstance(value, _Pending) and len(value.source.users) == 1:
            self.env[node] = replace(
                value,
                source=node,
                clamp_low=max(value.clamp_low, low),
                clamp_high=min(value.clamp_high, high),
            )
            return
        levels = self._levels(node.args[0])
        if isinstance(levels, _Float):
            self.env[node] = _Float(self.graph.node_copy(node, lambda n: self._emitted(n).node))
            return
        lo, hi = _clamped_range(levels.grid, low, high)
        new = self.graph.call_function(torch.clamp, (levels.node, lo, hi))
        self.env[node] = _Levels(new, Grid(levels.grid.step, lo, hi))

    def _identity(self, node: fx.Node) -> None:
        value = self._value(node.args[0])
        if isinstance(value, _Pending):
            if len(value.source.users) == 1:
                self.env[node] = replace(value, source=node)
                return
            value = self._levels(node.args[0])
        self.env[node] = value

    def _copy(self, node: fx.Node) -> None:
        """A reshape, index or zero pad: the same levels (zero is every grid's level 0)."""
        for arg in node.all_input_nodes:
            if isinstance(self.env.get(arg), _Pending):
                self._levels(arg)
        new = self.graph.node_copy(node, lambda n: self._emitted(n).node)
        first = next((self._emitted(a) for a in node.all_input_nodes), None)
        self.env[node] = _with_node(first, new) if first is not None else _Float(new)

    def _copy_levels(self, node: fx.Node, call: Any) -> None:
        value = self._levels(node.args[0])
        target, args = call(value.node)
        self.env[node] = _with_node(value, self.graph.call_function(target, args))

    def _add(self, node: fx.Node) -> None:
        args = [a for a in (*node.args, *node.kwargs.values()) if a is not None]
        if len(args) != 2 or not all(isinstance(a, fx.Node) for a in args):
            raise IntegerConversionError(f"node {node.name}: add with a constant or alpha")
        nodes = [self._node(a) for a in args]
        values = [self.env[a] for a in nodes]
        for index in (0, 1):
            pending, other = values[index], nodes[1 - index]
            if _absorbs_residual(pending):
                residual = self._residual_levels(other, node)
                if isinstance(residual, _Levels):
                    assert isinstance(pending, _Pending)
                    self.env[node] = replace(pending, source=node, residual=residual)
                    return
        left, right = (self._levels(a) for a in nodes)
        if isinstance(left, _Float) or isinstance(right, _Float):
            if isinstance(left, _Float) and isinstance(right, _Float):
                self._copy(node)
                return
            raise IntegerConversionError(f"node {node.name} adds a float and an integer tensor")
        grid = self._target(node) or _wide_grid(left.grid, right.grid)
        lo, hi = grid.low, grid.high
        m_a, m_b, shift = _pair_multipliers(left, right, grid)
        new = self._call(node.name, AddLevels(m_a, m_b, shift, lo, hi), left.node, right.node)
        self.env[node] = _Levels(new, grid)

    def _residual_levels(self, arg: fx.Node, add: fx.Node) -> _Levels | _Float:
        """A residual's levels; a layer output that only this sum consumes (a projection
        shortcut) goes to the sum's grid, widened to int16."""
        value = self._value(arg)
        if isinstance(value, _Pending) and self._target(value.source) is None:
            grid = self._target(add)
            if grid is not None:
                return self._materialise(value, residual_grid(grid))
        return self._levels(arg)

    def _cat(self, node: fx.Node) -> None:
        listed = node.args[0] if node.args else node.kwargs["tensors"]
        if not isinstance(listed, list | tuple):
            raise IntegerConversionError(f"node {node.name}: cat of {listed!r}, not a list")
        tensors = [self._node(t) for t in listed]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        grid = self._target(node)
        values = [self._value(t) for t in tensors]
        if grid is None:
            grids = [self._levels(t) for t in tensors]
            grid = _wide_grid(*(g.grid for g in grids if isinstance(g, _Levels)))
        parts = []
        for arg, value in zip(tensors, values, strict=True):
            levels = self._materialise(value, grid) if isinstance(value, _Pending) else value
            parts.append(self._on_grid(levels, grid, f"{node.name}.{arg.name}"))
        new = self.graph.call_function(torch.cat, (parts, dim))
        self.env[node] = _Levels(new, grid)

    def _global_pool(self, node: fx.Node, keepdim: bool) -> None:
        grid = self._target(node)
        pending = self._value(node.args[0])
        if isinstance(pending, _Pending) and grid is not None:
            # Averaging rounds once more: the values it averages are 16-bit levels of a
            # refined grid (the pooled quantiser's clip is far below the largest input).
            value: _Levels | _Float = self._materialise(pending, residual_grid(grid))
        else:
            value = self._levels(node.args[0])
        if isinstance(value, _Float):
            raise IntegerConversionError(f"node {node.name} pools a float tensor")
        grid = grid or value.grid
        positions = _spatial_positions(node)
        bound = max(abs(value.grid.low), value.grid.high) * positions
        d = _dyadic(value.grid.step / (positions * grid.step), bound)
        pool = GlobalAvgPool(int(d.multiplier[0]), int(d.shift[0]), keepdim, grid.low, grid.high)
        self.env[node] = _Levels(self._call(node.name, pool, value.node), grid)

    def _max_pool(self, node: fx.Node, module: nn.MaxPool2d) -> None:
        value = self._levels(node.args[0])
        if isinstance(value, _Float):
            raise IntegerConversionError(f"node {node.name} pools a float tensor")
        kernel = _single(module.kernel_size)
        stride = _single(module.stride or module.kernel_size)
        pool = MaxPool(kernel, stride, _single(module.padding))
        self.env[node] = _Levels(self._call(str(node.target), pool, value.node), value.grid)

    def _table(self, node: fx.Node, function: str) -> None:
        out = self._target(node)
        value = self._value(node.args[0])
        if out is None:
            out = Grid(1.0 / 255, 0, 255) if function == "sigmoid" else None
        if isinstance(value, _Pending):
            step = _SIGMOID_STEP if function == "sigmoid" else (out.step if out else None)
            if step is None:
                raise IntegerConversionError(f"node {node.name}: no quantiser after {function}")
            value = self._materialise(value, Grid(step, _TABLE_LOW, _TABLE_HIGH))
        if isinstance(value, _Float):
            raise IntegerConversionError(f"node {node.name}: {function} of a float tensor")
        out = out or value.grid
        table = lookup_table(function, value.grid, out)
        lookup = Lookup(table, value.grid.low, function)
        self.env[node] = _Levels(self._call(node.name, lookup, value.node), out)

    def _output(self, node: fx.Node) -> None:
        value = self._value(node.args[0])
        if isinstance(value, _Pending):
            value = self._materialise(value, None)
        if isinstance(value, _Float):
            raise IntegerConversionError("the model's output does not depend on a quantised layer")
        self.output_scale = value.grid.step
        self.graph.output(value.node)


_TABLE_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "hardswish": F.hardswish,
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
}


def lookup_table(function: str, grid: Grid, out: Grid) -> Tensor:
    """``clamp(round(f(level * step) / out_step))`` for every input level of ``grid``."""
    levels = torch.arange(grid.low, grid.high + 1, dtype=torch.float64)
    values = _TABLE_FUNCTIONS[function](levels * grid.step) / out.step
    return torch.round(values).clamp(out.low, out.high).to(torch.int64)


def _preserves_levels(node: fx.Node, module: nn.Module | None) -> bool:
    if module is not None:
        kinds = (*CLAMP_MODULES, *SHAPE_MODULES, nn.MaxPool2d, nn.AdaptiveAvgPool2d)
        return isinstance(module, kinds)
    if node.op == "call_function":
        functions = (
            *RELU_FUNCTIONS,
            *RELU6_FUNCTIONS,
            *CLAMP_FUNCTIONS,
            *SHAPE_FUNCTIONS,
            *CAT_FUNCTIONS,
        )
        return node.target in functions or node.target in (F.pad, F.adaptive_avg_pool2d)
    return node.op == "call_method" and (
        node.target in SHAPE_METHODS or node.target in CLAMP_METHODS
    )


def _absorbs_residual(value: _Value) -> bool:
    return (
        isinstance(value, _Pending)
        and value.residual is None
        and len(value.source.users) == 1
        and value.clamp_low == -math.inf
        and value.clamp_high == math.inf
    )


def _clamped_range(grid: Grid, low: float, high: float) -> tuple[int, int]:
    """The grid's range narrowed by a real clamp, as ``clamp(round(clamp(x) / step))``."""
    lo = grid.low if low == -math.inf else max(grid.low, round(low / grid.step))
    hi = grid.high if high == math.inf else min(grid.high, round(high / grid.step))
    return int(lo), int(max(hi, lo))


def residual_grid(consumer: Grid) -> Grid:
    """The 16-bit grid of a tensor that also feeds a residual addition (or an average
    pool): the consumer's step refined by ``RESIDUAL_EXTRA_BITS - bits`` bits, so the sum
    sees the value within a small fraction of a step and unclipped up to 8x the consumer's
    clip; the consumer reads it with one rounding shift and a clamp."""
    bits = (consumer.high - consumer.low).bit_length()
    extra = max(0, RESIDUAL_EXTRA_BITS - bits)
    return Grid(consumer.step / 2**extra, -RESIDUAL_LIMIT, RESIDUAL_LIMIT)


def _wide_grid(*grids: Grid) -> Grid:
    """A grid for a sum or concatenation no quantiser consumes: the finest step, int16."""
    return Grid(min(g.step for g in grids), -(2**15 - 1), 2**15 - 1)


def _pair_multipliers(left: _Levels, right: _Levels, grid: Grid) -> tuple[int, int, int]:
    ratios = np.array([left.grid.step / grid.step, right.grid.step / grid.step])
    bound = max(abs(left.grid.low), left.grid.high, abs(right.grid.low), right.grid.high)
    top = _dyadic(float(ratios.max()), bound)
    shift = int(top.shift[0])
    m = np.round(ratios * 2.0**shift).astype(np.int64)
    return int(m[0]), int(m[1]), shift


def _dyadic(ratio: float, input_bound: float) -> Dyadic:
    """A multiplier narrow enough that ``input * multiplier`` cannot overflow int64."""
    bits = min(MULTIPLIER_BITS, 62 - math.ceil(math.log2(input_bound + 1)))
    if bits < 8:
        raise IntegerConversionError(f"values up to {input_bound:.3g} leave no room in int64")
    return Dyadic.from_values(ratio, bits=bits)


def _requantizer(
    ratio: np.ndarray,
    bias_units: np.ndarray,
    acc_bound: np.ndarray,
    residual_ratio: float | None,
    residual_bound: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
    """Per-row multipliers, shifts and bias offsets (in ``2^-shift`` units) and the residual
    multiplier; one shift for every row when there is a residual, so that one scalar
    multiplies it. Fewer multiplier bits where the int64 sum could overflow otherwise."""
    for bits in range(MULTIPLIER_BITS, 7, -1):
        if residual_ratio is None:
            d = Dyadic.from_values(ratio, bits=bits)
            m, shift, m_res = d.multiplier, d.shift, None
        else:
            top = Dyadic.from_values(max(float(ratio.max()), residual_ratio), bits=bits)
            shift = np.full(ratio.shape, int(top.shift[0]), dtype=np.int64)
            m = np.round(ratio * 2.0 ** int(top.shift[0])).astype(np.int64)
            m_res = round(residual_ratio * 2.0 ** int(top.shift[0]))
        offset = np.round(bias_units * np.exp2(shift.astype(np.float64)))
        total = acc_bound * m + np.abs(offset) + residual_bound * (m_res or 0) + np.exp2(shift)
        if float(total.max(initial=0.0)) < _SUM_LIMIT:
            return m, shift, offset.astype(np.int64), m_res
    raise IntegerConversionError("a layer's bias or residual is too large for its output scale")


def _conv_params(layer: QuantConv2d) -> dict[str, Any]:
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise IntegerConversionError(
            f"the integer engine supports explicit zero padding, not {layer.padding!r}/"
            f"{layer.padding_mode!r}"
        )
    return {
        "stride": tuple(layer.stride),
        "padding": tuple(layer.padding),
        "dilation": tuple(layer.dilation),
        "groups": layer.groups,
    }


def _module_bounds(module: nn.Module) -> tuple[float, float]:
    if isinstance(module, nn.ReLU6):
        return 0.0, 6.0
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val), float(module.max_val)
    return 0.0, math.inf


def _call_bounds(node: fx.Node) -> tuple[float, float]:
    """The real bounds of a clamp/clip/hardtanh call (constants only)."""
    names = ("min_val", "max_val") if node.target is F.hardtanh else ("min", "max")
    defaults = (-1.0, 1.0) if node.target is F.hardtanh else (None, None)
    bounds: list[float | None] = []
    for index, (name, default) in enumerate(zip(names, defaults, strict=True)):
        value = node.kwargs.get(
            name, node.args[index + 1] if len(node.args) > index + 1 else default
        )
        if isinstance(value, fx.Node):
            raise IntegerConversionError(f"node {node.name}: clamp to a tensor bound")
        if value is not None and not isinstance(value, int | float):
            raise IntegerConversionError(f"node {node.name}: clamp to a bound of {value!r}")
        bounds.append(value)
    low = -math.inf if bounds[0] is None else float(bounds[0])
    high = math.inf if bounds[1] is None else float(bounds[1])
    return low, high


def _with_node(value: _Levels | _Float, node: fx.Node) -> _Levels | _Float:
    """The same levels (or float value), held by another node of the new graph."""
    return replace(value, node=node) if isinstance(value, _Levels) else _Float(node)


def _single(value: Any) -> int:
    return int(value[0]) if isinstance(value, tuple) else int(value)


def _spatial_positions(node: fx.Node) -> int:
    arg = node.args[0]
    shape = arg.meta.get("tensor_meta") if isinstance(arg, fx.Node) else None
    if shape is None:
        raise IntegerConversionError(f"node {node.name}: spatial size unknown")
    return math.prod(shape.shape[-2:])
