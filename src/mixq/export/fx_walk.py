"""The walk every ONNX exporter makes over a shape-propagated ``torch.fx`` graph: one node
at a time, in order, each dispatched by its kind, the value it becomes kept in ``env``.

The exact integer exporter (:mod:`mixq.export.onnx_integer`) and the fake-quantised
exporters (:mod:`mixq.export.fake_quant_graph`: QONNX and QDQ) differ in what a node
becomes, not in how the graph is walked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import torch.fx as fx
from torch import nn

from mixq.errors import IntegerConversionError, MixqError
from mixq.export.onnx_graph import OnnxGraph, tensor_shape

Value = TypeVar("Value")


class FxWalker(ABC, Generic[Value]):
    """Converts an fx graph node by node into :attr:`graph`; ``env`` maps each node to
    the value it became (``None`` for values that are not tensors: sizes, shapes)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.modules = modules
        self.graph = OnnxGraph()
        self.env: dict[fx.Node, Value | None] = {}
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []

    def walk(self, nodes: Iterable[fx.Node]) -> None:
        """Convert every node, in graph order."""
        for node in nodes:
            self._convert(node)
            self._converted(node)

    def _convert(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            if self.inputs:
                raise IntegerConversionError("the model has more than one input")
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

    def _converted(self, node: fx.Node) -> None:
        """Called after each node is converted (a subclass may add nodes after it)."""

    def _value(self, arg: Any) -> Value:
        value = self.env.get(arg) if isinstance(arg, fx.Node) else None
        if value is None:
            raise IntegerConversionError(f"expected a tensor from the graph, got {arg!r}")
        return value

    def _shape(self, arg: Any) -> tuple[int, ...]:
        shape = tensor_shape(arg) if isinstance(arg, fx.Node) else None
        if shape is None:
            raise IntegerConversionError(f"shape of {arg!r} unknown")
        return shape

    @abstractmethod
    def _placeholder(self, node: fx.Node) -> None: ...

    @abstractmethod
    def _output(self, node: fx.Node) -> None: ...

    @abstractmethod
    def _module(self, node: fx.Node, module: nn.Module) -> None: ...

    @abstractmethod
    def _function(self, node: fx.Node) -> None: ...

    @abstractmethod
    def _method(self, node: fx.Node) -> None: ...

    @abstractmethod
    def _unsupported(self, node: fx.Node) -> MixqError:
        """The error for a node this exporter cannot write."""
