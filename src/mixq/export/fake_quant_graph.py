"""The fake-quantised model as a float ONNX graph, the base of the QONNX and QDQ exporters.

The fx graph of the quantised model (BatchNorm folded, as the integer engine folds it)
becomes float ONNX ops: ``Relu``, ``Clip`` (ReLU6, clamps), ``Add``, ``GlobalAveragePool``,
``MaxPool``, ``Concat``, ``Sigmoid``/``HardSigmoid`` (SiLU, Hardswish), ``Slice``, ``Pad``
and ``Reshape``. What a quantised layer becomes, with its input and weight quantisation,
is the subclass's: :mod:`mixq.export.qonnx` writes FINN's ``Quant`` nodes,
:mod:`mixq.export.qdq` ``QuantizeLinear``/``DequantizeLinear`` pairs.
"""

from __future__ import annotations

import copy
import operator
from abc import abstractmethod
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from mixq.errors import IntegerConversionError, UnsupportedLayerError
from mixq.export.fx_walk import FxWalker
from mixq.export.onnx_graph import (
    INPUT_NAME,
    RESHAPE_FUNCTIONS,
    RESHAPE_METHODS,
    TensorProto,
    emit_pad,
    emit_reshape,
    emit_slice,
    int_list,
    require_onnx,
)
from mixq.integer.supported import (
    ADD_FUNCTIONS,
    CAT_FUNCTIONS,
    CLAMP_FUNCTIONS,
    RELU6_FUNCTIONS,
    RELU_FUNCTIONS,
    TABLE_FUNCTIONS,
    is_global,
    is_zero_pad,
)
from mixq.nn.layers import QUANT_LAYERS, QuantLayer

_PASS_MODULES = (nn.Identity, nn.Dropout)


def copy_quantized(quantized_model: nn.Module) -> tuple[nn.Module, dict[str, QuantLayer]]:
    """An eval-mode copy of a quantised model (the export must not touch the user's) and
    its quantised layers by name; refuses a model with none."""
    require_onnx()
    model = copy.deepcopy(quantized_model).eval()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)}
    if not layers:
        raise IntegerConversionError("the model has no quantised layer; run mixq.quantize first")
    return model, layers


class FakeQuantExporter(FxWalker[str]):
    """The fake-quantised model's fx graph in float ONNX ops (each node's value is the name
    of its ONNX tensor); a quantised layer, with its input and weight quantisation, is the
    subclass's :meth:`_layer`: QONNX ``Quant`` nodes or QDQ pairs."""

    format_name = "ONNX"  # names the format in error messages

    def __init__(self, model: nn.Module) -> None:
        super().__init__(dict(model.named_modules()))

    @abstractmethod
    def _layer(self, node: fx.Node, layer: QuantLayer) -> str:
        """The ONNX tensor a quantised layer's output becomes."""

    def _module(self, node: fx.Node, module: nn.Module) -> None:
        if isinstance(module, QUANT_LAYERS):
            self.env[node] = self._layer(node, module)
        elif isinstance(module, nn.ReLU):
            self.env[node] = self.graph.op("Relu", [self._value(node.args[0])], node.name)
        elif isinstance(module, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
            self.env[node] = self._clip(node, module.min_val, module.max_val)
        elif isinstance(module, nn.Hardswish | nn.SiLU | nn.Sigmoid):
            self.env[node] = self._table_function(node, type(module).__name__.lower())
        elif isinstance(module, _PASS_MODULES):
            self.env[node] = self._value(node.args[0])
        elif isinstance(module, nn.Flatten):
            self.env[node] = self._reshape(node)
        elif isinstance(module, nn.AdaptiveAvgPool2d) and is_global(module.output_size):
            x = self._value(node.args[0])
            self.env[node] = self.graph.op("GlobalAveragePool", [x], node.name)
        elif isinstance(module, nn.MaxPool2d) and not module.return_indices:
            self.env[node] = self._max_pool(node, module)
        else:
            raise self._unsupported(node, type(module).__name__)

    def _function(self, node: fx.Node) -> None:
        target = node.target
        if target in RELU_FUNCTIONS:
            self.env[node] = self.graph.op("Relu", [self._value(node.args[0])], node.name)
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
            x = self._value(node.args[0])
            self.env[node] = emit_slice(self.graph, x, node.args[1], rank, node.name)
        elif target is F.pad and is_zero_pad(node):
            rank = len(self._shape(node.args[0]))
            x = self._value(node.args[0])
            pad = int_list(node.args[1], "pad", node.name)
            self.env[node] = emit_pad(self.graph, x, pad, rank, node.name)
        elif target in RESHAPE_FUNCTIONS:
            self.env[node] = self._reshape(node)
        elif target is F.adaptive_avg_pool2d and is_global(node.args[1]):
            x = self._value(node.args[0])
            self.env[node] = self.graph.op("GlobalAveragePool", [x], node.name)
        else:
            raise self._unsupported(node)

    def _method(self, node: fx.Node) -> None:
        if node.target == "relu":
            self.env[node] = self.graph.op("Relu", [self._value(node.args[0])], node.name)
        elif node.target == "add":
            self.env[node] = self._add(node)
        elif node.target in ("clamp", "clip"):
            self.env[node] = self._clip(node, *_clamp_bounds(node))
        elif node.target == "sigmoid":
            self.env[node] = self._table_function(node, "sigmoid")
        elif node.target in RESHAPE_METHODS:
            self.env[node] = self._reshape(node)
        elif node.target == "contiguous":
            self.env[node] = self._value(node.args[0])
        else:
            raise self._unsupported(node)

    def _unsupported(self, node: fx.Node, what: str | None = None) -> UnsupportedLayerError:
        name = what or getattr(node.target, "__name__", str(node.target))
        return UnsupportedLayerError(
            f"the {self.format_name} export cannot write {name!r} (node {node.name})"
        )

    # -- helpers --------------------------------------------------------------------------

    def _float(self, base: str, value: np.ndarray | float) -> str:
        return self.graph.constant(base, np.asarray(value, dtype=np.float32))

    # -- operations -----------------------------------------------------------------------

    def _placeholder(self, node: fx.Node) -> None:
        self.inputs.append(self.graph.input_value(TensorProto.FLOAT, list(self._shape(node))))
        self.env[node] = INPUT_NAME

    def _output(self, node: fx.Node) -> None:
        dims: list[int | str] = list(self._shape(node.args[0]))
        x = self._value(node.args[0])
        self.outputs.append(self.graph.output_value(x, TensorProto.FLOAT, dims))

    def _add(self, node: fx.Node) -> str:
        args = [a for a in (*node.args, *node.kwargs.values()) if a is not None]
        if len(args) != 2 or not all(isinstance(a, fx.Node) for a in args):
            raise self._unsupported(node, "add with a constant or alpha")
        return self.graph.op("Add", [self._value(a) for a in args], node.name)

    def _clip(self, node: fx.Node, low: float | None, high: float | None) -> str:
        x = self._value(node.args[0])
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
        names = [self._value(t) for t in tensors]
        return self.graph.op("Concat", names, node.name, axis=dim % rank)

    def _table_function(self, node: fx.Node, function: str) -> str:
        # Float here: the quantised graph's Hardswish/SiLU/Sigmoid sit between quantisers.
        x = self._value(node.args[0])
        if function == "sigmoid":
            return self.graph.op("Sigmoid", [x], node.name)
        if function == "silu":
            return self.graph.op("Mul", [x, self.graph.op("Sigmoid", [x], node.name)], node.name)
        gate = self.graph.op("HardSigmoid", [x], node.name, alpha=1.0 / 6.0, beta=0.5)
        return self.graph.op("Mul", [x, gate], node.name)  # hardswish, before opset 14

    def _reshape(self, node: fx.Node) -> str:
        return emit_reshape(self.graph, self._value(node.args[0]), self._shape(node), node.name)

    def _max_pool(self, node: fx.Node, module: nn.MaxPool2d) -> str:
        kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        pad, dilation = _pair(module.padding), _pair(module.dilation)
        return self.graph.op(
            "MaxPool",
            [self._value(node.args[0])],
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
