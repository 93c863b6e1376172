"""``to_integer``: trace a quantised model and rebuild its graph on integers.

Every tensor between layers becomes an int tensor with one real scale known at conversion
time. A quantised layer's input is requantised to the layer's activation levels; its output
(int accumulators, then the row's dyadic multiplier with the folded BN bias) is a *fine*
integer at ``step / 2^FINE_BITS`` of the next quantiser's step, so ReLU, residual additions
and pooling work on integers that carry 24 more bits than the activations. That is what the
fake-quantised model computes in float32 between its quantisers; the integer model matches
it to within those bits, and its activations to the level except where a float32 value
falls within a rounding error of a midpoint between two levels (see :mod:`agreement` and
``docs/integer.md``).
"""

from __future__ import annotations

import copy
import math
import operator
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp

from mixq.errors import IntegerConversionError, UnsupportedLayerError
from mixq.integer.dyadic import MULTIPLIER_BITS, Dyadic
from mixq.integer.ops import (
    ENGINES,
    GlobalAvgPool,
    IntegerLayer,
    MaxPool,
    QuantizeInput,
    Requantize,
    Rescale,
    layer_engine,
)
from mixq.integer.weights import integer_weights
from mixq.nn.layers import QUANT_LAYERS, QuantConv2d

FINE_BITS = 24
"""Extra fractional bits of the integers between quantisers, beyond the activation step."""

INT32_LIMIT = 2**31 - 1
# Leaves room for the rounding half (< 2^61) and the int8 path's correction (< 2^55).
_OFFSET_LIMIT = 2**60

# The fx targets every graph walker here (the engine, ONNX and QONNX export) accepts.
RELU_FUNCTIONS = (F.relu, torch.relu)
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_SHAPE_FUNCTIONS = (torch.flatten, torch.reshape, operator.getitem, getattr)
_SHAPE_METHODS = {"view", "reshape", "flatten", "contiguous", "size", "squeeze", "unsqueeze"}
_SHAPE_MODULES = (nn.Flatten, nn.Identity, nn.Dropout)


@dataclass
class _Value:
    """A tensor of the integer graph: its node, real units per integer step and a bound."""

    node: fx.Node
    scale: float | None  # None: still float (before the entrance)
    bound: float = 0.0  # largest magnitude the integers can take


class IntegerModel(nn.Module):
    """An integer-only model: float in, quantised once at the entrance, float logits out.

    ``forward_integer`` returns the output integers (scale ``output_scale``);
    ``layer_inputs`` names the module that produces each quantised layer's input levels.
    """

    def __init__(
        self,
        graph_module: fx.GraphModule,
        output_scale: float,
        layer_inputs: dict[str, str],
        engine: str,
    ) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.output_scale = output_scale
        self.layer_inputs = dict(layer_inputs)
        self.engine = engine

    def forward_integer(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.graph_module(x)

    def forward(self, x: Tensor) -> Tensor:
        return (self.forward_integer(x).double() * self.output_scale).float()


def to_integer(model: nn.Module, example_input: Tensor, engine: str = "reference") -> IntegerModel:
    """Convert a quantised model (from :func:`mixq.quantize`, calibrated) to integers.

    ``example_input`` fixes the shapes the conversion needs (the number of positions that
    average pooling divides by); the integer model then takes inputs of that shape (any
    batch size).
    ``engine="reference"`` runs int64 kernels with PoT and SP2 rows as shift-adds;
    ``"int8"`` runs every layer through PyTorch's int8 GEMM (oneDNN), with the same integers.

    >>> import torch, mixq
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    >>> data = [torch.randn(8, 3, 10, 10) for _ in range(2)]
    >>> qnet = mixq.quantize(net, "rmsmp", calibration_data=data, progress=False)
    >>> inet = mixq.to_integer(qnet, data[0])
    >>> bool((inet(data[0]).argmax(1) == qnet(data[0]).argmax(1)).all())
    True
    """
    if engine not in ENGINES:
        raise IntegerConversionError(f"unknown engine {engine!r}; use one of {ENGINES}")
    model = copy.deepcopy(model).eval()
    if not any(isinstance(m, QUANT_LAYERS) for m in model.modules()):
        raise IntegerConversionError("the model has no quantised layer; run mixq.quantize first")
    _check_calibrated(model)
    traced = trace_with_shapes(model, example_input)
    builder = _Builder(model, traced, engine)
    return builder.build()


def _check_calibrated(model: nn.Module) -> None:
    for name, module in model.named_modules():
        act = getattr(module, "act_quant", None) if isinstance(module, QUANT_LAYERS) else None
        if act is not None and not bool(act.calibrated):
            raise IntegerConversionError(
                f"layer {name!r}: input quantiser not calibrated; pass calibration data to "
                "mixq.quantize or call mixq.calibrate first"
            )


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, QUANT_LAYERS) or super().is_leaf_module(m, module_qualified_name)


def trace_with_shapes(model: nn.Module, example_input: Tensor) -> fx.Graph:
    """The model's fx graph, each node's ``meta["tensor_meta"]`` filled from the example."""
    graph = trace_quantized(model)
    with torch.no_grad():
        ShapeProp(fx.GraphModule(model, graph)).propagate(example_input)
    return graph


def trace_quantized(model: nn.Module) -> fx.Graph:
    try:
        return _Tracer().trace(model)
    except Exception as exc:  # fx raises many types on untraceable Python control flow
        raise IntegerConversionError(f"torch.fx cannot trace the model: {exc}") from exc


class _Builder:
    def __init__(self, model: nn.Module, graph: fx.Graph, engine: str) -> None:
        self.model = model
        self.source = graph
        self.modules = dict(model.named_modules())
        self.engine = engine
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.env: dict[fx.Node, _Value] = {}
        self.layer_inputs: dict[str, str] = {}
        self.output_scale = 1.0

    def build(self) -> IntegerModel:
        for node in self.source.nodes:
            self._convert(node)
        graph_module = fx.GraphModule(self.root, self.graph, class_name="IntegerGraph")
        return IntegerModel(graph_module, self.output_scale, self.layer_inputs, self.engine)

    # -- dispatch -------------------------------------------------------------------------

    def _convert(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self.env[node] = _Value(self.graph.placeholder(node.name), None)
        elif node.op == "output":
            self._output(node)
        elif node.op == "call_module":
            self._call_module(node, self.modules[str(node.target)])
        elif node.op == "call_function":
            self._call_function(node)
        elif node.op == "call_method":
            self._call_method(node)
        else:
            raise self._unsupported(node)

    def _call_module(self, node: fx.Node, module: nn.Module) -> None:
        if isinstance(module, QUANT_LAYERS):
            self._quant_layer(node, module)
        elif isinstance(module, nn.ReLU):
            self._relu(node)
        elif isinstance(module, _SHAPE_MODULES):
            self._passthrough(node, module)
        elif isinstance(module, nn.AdaptiveAvgPool2d) and _is_global(module.output_size):
            self._global_pool(node, keepdim=True)
        elif isinstance(module, nn.MaxPool2d) and _plain_max_pool(module):
            self._max_pool(node, module)
        else:
            raise self._unsupported(node, type(module).__name__)

    def _call_function(self, node: fx.Node) -> None:
        target = node.target
        if target in RELU_FUNCTIONS:
            self._relu(node)
        elif target in ADD_FUNCTIONS:
            self._add(node)
        elif (target is F.pad and is_zero_pad(node)) or target in _SHAPE_FUNCTIONS:
            self._copy(node)
        elif target is F.adaptive_avg_pool2d and _is_global(node.args[1]):
            self._global_pool(node, keepdim=True)
        else:
            raise self._unsupported(node)

    def _call_method(self, node: fx.Node) -> None:
        if node.target == "relu":
            self._relu(node)
        elif node.target == "add":
            self._add(node)
        elif node.target in _SHAPE_METHODS:
            self._copy(node)
        else:
            raise self._unsupported(node)

    def _unsupported(self, node: fx.Node, what: str | None = None) -> UnsupportedLayerError:
        name = what or getattr(node.target, "__name__", str(node.target))
        return UnsupportedLayerError(
            f"the integer engine cannot run {name!r} (node {node.name}); it runs quantised "
            "Conv2d/Linear, ReLU, residual additions, global average pooling, max pooling "
            "and reshapes"
        )

    # -- helpers --------------------------------------------------------------------------

    def _value(self, arg: Any) -> _Value:
        if not isinstance(arg, fx.Node) or arg not in self.env:
            raise IntegerConversionError(f"expected a tensor from the graph, got {arg!r}")
        return self.env[arg]

    def _add_module(self, name: str, module: nn.Module) -> str:
        base = name.replace(".", "_") or "module"
        unique, index = base, 1
        while hasattr(self.root, unique):
            index += 1
            unique = f"{base}_{index}"
        self.root.add_module(unique, module)
        return unique

    def _call(self, name: str, module: nn.Module, *args: Any) -> tuple[str, fx.Node]:
        target = self._add_module(name, module)
        return target, self.graph.call_module(target, args)

    def _copy(self, node: fx.Node) -> None:
        new = self.graph.node_copy(node, lambda n: self.env[n].node)
        first = next((a for a in node.args if isinstance(a, fx.Node) and a in self.env), None)
        source = self.env[first] if first is not None else _Value(new, None)
        self.env[node] = _Value(new, source.scale, source.bound)

    def _passthrough(self, node: fx.Node, module: nn.Module) -> None:
        if isinstance(module, nn.Flatten):
            value = self._value(node.args[0])
            new = self.graph.call_function(
                torch.flatten, (value.node, module.start_dim, module.end_dim)
            )
            self.env[node] = _Value(new, value.scale, value.bound)
        else:  # Identity, and Dropout in eval mode
            self.env[node] = self._value(node.args[0])

    def _target_step(self, node: fx.Node) -> float | None:
        """The finest input step of the quantised layers this node's value reaches."""
        steps: list[float] = []
        queue, seen = deque(node.users), set()
        while queue:
            user = queue.popleft()
            if user in seen:
                continue
            seen.add(user)
            module = self.modules.get(str(user.target)) if user.op == "call_module" else None
            if isinstance(module, QUANT_LAYERS):
                if module.act_quant is not None:
                    steps.append(float(module.act_quant.step))
                continue
            queue.extend(user.users)
        return min(steps) if steps else None

    def _fine_scale(self, node: fx.Node, fallback: float, bound_real: float) -> float:
        target = self._target_step(node)
        scale = target / 2**FINE_BITS if target is not None else fallback
        return max(scale, bound_real / INT32_LIMIT)

    # -- operations -----------------------------------------------------------------------

    def _quant_layer(self, node: fx.Node, layer: nn.Module) -> None:
        name = str(node.target)
        value = self._value(node.args[0])
        if layer.act_quant is None:
            raise IntegerConversionError(
                f"layer {name!r} has a float input (act_bits 0); the integer engine needs "
                "every quantised layer's input quantised"
            )
        act = layer.act_quant
        if not act.enabled:  # calibration was checked before tracing
            raise IntegerConversionError(f"layer {name!r}: input quantiser switched off")
        step = float(act.step)
        high = act.levels
        low = -high if act.signed else 0
        q_node = self._input_levels(name, value, act.step, step, low, high)
        weights = integer_weights(layer)
        acc_bound = high * weights.row_bound().astype(np.float64)
        if acc_bound.max() > INT32_LIMIT:
            raise IntegerConversionError(
                f"layer {name!r}: accumulators can reach {acc_bound.max():.3g}, beyond int32"
            )
        acc_scale = step * weights.step
        _, bias = layer.effective_weight_bias()
        bias_real = bias.detach().double().numpy() if bias is not None else np.zeros(weights.rows)
        bound_real = float((acc_bound * acc_scale + np.abs(bias_real)).max())
        scale = self._fine_scale(node, float(acc_scale.min()), bound_real)
        multiplier, shift, offset = _requantizer(acc_scale / scale, bias_real / scale, name)
        conv = _conv_params(layer) if isinstance(layer, QuantConv2d) else None
        engine, int8_offset = layer_engine(weights.values, conv, low, high, self.engine)
        module = IntegerLayer(weights, conv, multiplier, shift, offset, engine, int8_offset)
        _, out = self._call(name, module, q_node)
        self.env[node] = _Value(out, scale, bound_real / scale + 1)

    def _input_levels(
        self, name: str, value: _Value, step_tensor: Tensor, step: float, low: int, high: int
    ) -> fx.Node:
        if value.scale is None:
            module: nn.Module = QuantizeInput(step_tensor, low, high)
        else:
            d = _dyadic(value.scale / step, value.bound)
            module = Requantize(int(d.multiplier[0]), int(d.shift[0]), low, high)
        target, q_node = self._call(f"{name}.input", module, value.node)
        self.layer_inputs[name] = target
        return q_node

    def _relu(self, node: fx.Node) -> None:
        value = self._value(node.args[0])
        if value.scale is None:
            self._copy(node)
            return
        new = self.graph.call_function(torch.clamp_min, (value.node, 0))
        self.env[node] = _Value(new, value.scale, value.bound)

    def _add(self, node: fx.Node) -> None:
        args = [a for a in (*node.args, *node.kwargs.values()) if a is not None]
        if len(args) != 2 or not all(isinstance(a, fx.Node) for a in args):
            raise self._unsupported(node, "add with a constant or alpha")
        left, right = self._value(args[0]), self._value(args[1])
        if left.scale is None or right.scale is None:
            if left.scale is None and right.scale is None:
                self._copy(node)
                return
            raise IntegerConversionError(f"node {node.name} adds a float and an integer tensor")
        bound_real = left.bound * left.scale + right.bound * right.scale
        scale = self._fine_scale(node, min(left.scale, right.scale), bound_real)
        terms = [self._rescaled(node.name, v, scale) for v in (left, right)]
        new = self.graph.call_function(operator.add, tuple(terms))
        self.env[node] = _Value(new, scale, bound_real / scale + 2)

    def _rescaled(self, name: str, value: _Value, scale: float) -> fx.Node:
        assert value.scale is not None
        if value.scale == scale:
            return value.node
        d = _dyadic(value.scale / scale, value.bound)
        _, new = self._call(
            f"{name}.rescale", Rescale(int(d.multiplier[0]), int(d.shift[0])), value.node
        )
        return new

    def _global_pool(self, node: fx.Node, keepdim: bool) -> None:
        value = self._value(node.args[0])
        if value.scale is None:
            raise IntegerConversionError(f"node {node.name} pools a float tensor")
        bound_real = value.bound * value.scale
        scale = self._fine_scale(node, value.scale, bound_real)
        positions = _spatial_positions(node)
        d = _dyadic(value.scale / (positions * scale), value.bound * positions)
        pool = GlobalAvgPool(int(d.multiplier[0]), int(d.shift[0]), keepdim)
        _, new = self._call(node.name, pool, value.node)
        self.env[node] = _Value(new, scale, bound_real / scale + 1)

    def _max_pool(self, node: fx.Node, module: nn.MaxPool2d) -> None:
        value = self._value(node.args[0])
        kernel, stride = _single(module.kernel_size), _single(module.stride or module.kernel_size)
        _, new = self._call(str(node.target), MaxPool(kernel, stride), value.node)
        self.env[node] = _Value(new, value.scale, value.bound)

    def _output(self, node: fx.Node) -> None:
        value = self._value(node.args[0])
        if value.scale is None:
            raise IntegerConversionError("the model's output does not depend on a quantised layer")
        self.output_scale = value.scale
        self.graph.output(value.node)


def _dyadic(ratio: float, input_bound: float) -> Dyadic:
    """A multiplier narrow enough that ``input * multiplier`` cannot overflow int64."""
    bits = min(MULTIPLIER_BITS, 62 - math.ceil(math.log2(input_bound + 1)))
    if bits < 8:
        raise IntegerConversionError(f"values up to {input_bound:.3g} leave no room in int64")
    return Dyadic.from_values(ratio, bits=bits)


def _requantizer(
    ratio: np.ndarray, bias_units: np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multipliers, shifts and bias offsets (in ``2^-shift`` units) of one layer's rows,
    with fewer multiplier bits for rows whose offset would not fit int64 otherwise."""
    for bits in range(31, 7, -1):
        d = Dyadic.from_values(ratio, bits=bits)
        offset = np.round(bias_units * np.exp2(d.shift.astype(np.float64)))
        if np.abs(offset).max(initial=0.0) < _OFFSET_LIMIT:
            return d.multiplier, d.shift, offset.astype(np.int64)
    raise IntegerConversionError(f"layer {name!r}: bias too large for the output scale")


def _conv_params(layer: QuantConv2d) -> dict[str, Any]:
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise UnsupportedLayerError(
            f"the integer engine supports explicit zero padding, not {layer.padding!r}/"
            f"{layer.padding_mode!r}"
        )
    return {
        "stride": tuple(layer.stride),
        "padding": tuple(layer.padding),
        "dilation": tuple(layer.dilation),
        "groups": layer.groups,
    }


def _is_global(size: Any) -> bool:
    return size == 1 or tuple(size) == (1, 1) if size is not None else False


def _plain_max_pool(module: nn.MaxPool2d) -> bool:
    return (
        _single(module.padding) == 0
        and _single(module.dilation) == 1
        and not module.ceil_mode
        and not module.return_indices
        and _single(module.kernel_size) > 0
    )


def _single(value: Any) -> int:
    if isinstance(value, tuple):
        if len(set(value)) != 1:
            raise UnsupportedLayerError(f"non-square pooling {value} is not supported")
        return int(value[0])
    return int(value)


def is_zero_pad(node: fx.Node) -> bool:
    """Whether an ``F.pad`` call pads with zeros (which integers at any scale can do)."""
    mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
    value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
    return mode == "constant" and (value is None or value == 0)


def _spatial_positions(node: fx.Node) -> int:
    shape = node.args[0].meta.get("tensor_meta")
    if shape is None:
        raise IntegerConversionError(f"node {node.name}: spatial size unknown")
    return math.prod(shape.shape[-2:])
