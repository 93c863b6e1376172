"""The lowered graph as one C++ plan (``csrc/plan.cpp``): every node a step on numbered
tensor slots, run in a single call without the GIL.

At batch 1 a ResNet-20 layer computes for tens of microseconds and an fx node's Python
dispatch costs about as much again; the plan pays that once per forward. Its steps call the
same C++ operators as the graph's modules, so its integers are the graph's (tested).
:func:`build_plan` returns ``None`` for a graph with a node it has no step for (the graph
then runs as it is).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from mixq.integer.fast.build import kernels
from mixq.integer.fast.layers import (
    DTYPES,
    FastAddLevels,
    FastGlobalAvgPool,
    FastLayer,
    FastLookup,
    FastMaxPool,
    FastQuantizeInput,
    FastRequantize,
)

QUANTIZE_INPUT, CONV, REQUANTIZE, ADD, GLOBAL_AVG_POOL, MAX_POOL, LOOKUP = range(7)
SLICE, PAD, FLATTEN, CAT = range(7, 11)
_SLICE_END = 2**63 - 1


class PlanUnsupportedError(Exception):
    """A node the plan has no step for (internal: :func:`build_plan` returns ``None``)."""


@dataclass
class _Step:
    kind: int
    inputs: list[int]
    outputs: list[int]
    ints: list[int] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)
    real: float = 0.0


@dataclass
class CompiledPlan:
    """A built plan: ``run(x)`` returns the model's output levels as int64."""

    native: Any
    output_slot: int
    steps: int

    def run(self, x: Tensor) -> Tensor:
        return self.native.run(x, self.output_slot)


def build_plan(graph_module: fx.GraphModule) -> CompiledPlan | None:
    """The graph as a plan, or ``None`` where a node has no step (or a layer's input type
    is one the fused kernel does not take, which the graph's reference fallback handles)."""
    try:
        return _Builder(graph_module).build()
    except PlanUnsupportedError:
        return None


def _int_arg(node: fx.Node, position: int, name: str, default: int) -> int:
    value = node.kwargs.get(name, node.args[position] if len(node.args) > position else default)
    if not isinstance(value, int):
        raise PlanUnsupportedError(f"{node.name}: {name} is not a constant int")
    return value


def _buffer(module: nn.Module, name: str) -> Tensor:
    value = getattr(module, name)
    assert isinstance(value, Tensor)
    return value


class _Builder:
    def __init__(self, graph_module: fx.GraphModule) -> None:
        self.modules = dict(graph_module.named_modules())
        self.graph = graph_module.graph
        self.slot: dict[fx.Node, int | list[int]] = {}
        self.dtype: dict[int, torch.dtype] = {}
        self.steps: list[_Step] = []
        self.slots = 0

    def new_slot(self, dtype: torch.dtype) -> int:
        self.dtype[self.slots] = dtype
        self.slots += 1
        return self.slots - 1

    def input_slot(self, arg: Any) -> int:
        slot = self.slot.get(arg) if isinstance(arg, fx.Node) else None
        if not isinstance(slot, int):
            raise PlanUnsupportedError(f"argument {arg!r} is not one tensor")
        return slot

    def build(self) -> CompiledPlan:
        output: int | None = None
        for node in self.graph.nodes:
            if node.op == "placeholder":
                if self.slots:
                    raise PlanUnsupportedError("more than one input")
                self.slot[node] = self.new_slot(torch.float32)
            elif node.op == "call_module":
                self.add_module(node, self.modules[str(node.target)])
            elif node.op == "call_function":
                self.add_function(node)
            elif node.op == "output":
                output = self.input_slot(node.args[0])
            else:
                raise PlanUnsupportedError(f"{node.op} node {node.name}")
        if output is None:
            raise PlanUnsupportedError("no output")
        return self.compile(output)

    def add(self, node: fx.Node, step: _Step) -> None:
        self.steps.append(step)
        self.slot[node] = step.outputs[0] if len(step.outputs) == 1 else list(step.outputs)

    def add_module(self, node: fx.Node, module: nn.Module) -> None:
        if node.kwargs:
            raise PlanUnsupportedError(f"keyword arguments of {node.name}")
        inputs = [self.input_slot(arg) for arg in node.args]
        if isinstance(module, FastLayer):
            self.add(node, self.conv_step(module, inputs))
            return
        one = DTYPES[getattr(module, "code", 0)]
        if isinstance(module, FastQuantizeInput):
            ints = [module.low, module.high, module.code]
            step = _Step(QUANTIZE_INPUT, inputs, [self.new_slot(one)], ints, real=module.step)
        elif isinstance(module, FastRequantize):
            ints = [module.multiplier, module.shift, module.low, module.high, module.code]
            step = _Step(REQUANTIZE, inputs, [self.new_slot(one)], ints)
        elif isinstance(module, FastAddLevels):
            ints = [module.m_a, module.m_b, module.shift, module.low, module.high, module.code]
            step = _Step(ADD, inputs, [self.new_slot(one)], ints)
        elif isinstance(module, FastGlobalAvgPool):
            ints = [module.multiplier, module.shift, module.low, module.high, module.code]
            ints.append(int(module.keepdim))
            step = _Step(GLOBAL_AVG_POOL, inputs, [self.new_slot(one)], ints)
        elif isinstance(module, FastMaxPool):
            out = self.new_slot(self.dtype[inputs[0]])
            step = _Step(MAX_POOL, inputs, [out], [module.kernel, module.stride, module.padding])
        elif isinstance(module, FastLookup):
            out = self.new_slot(module.table.dtype)
            step = _Step(LOOKUP, inputs, [out], [module.low], [module.table])
        else:
            raise PlanUnsupportedError(f"module {type(module).__name__}")
        if len(inputs) != (2 if step.kind == ADD else 1):
            raise PlanUnsupportedError(f"{node.name} takes {len(inputs)} inputs")
        self.add(node, step)

    def conv_step(self, layer: FastLayer, inputs: list[int]) -> _Step:
        fused = layer.fused
        dtype = self.dtype[inputs[0]]
        if not (dtype == torch.uint8 or (dtype == torch.int8 and fused.signed_inputs_fit)):
            raise PlanUnsupportedError(f"the fused kernel does not take {dtype} inputs")
        if len(inputs) != (2 if fused.has_residual else 1):
            raise PlanUnsupportedError("a layer's residual does not match its inputs")
        outputs = [self.new_slot(fused.out_dtype)]
        if fused.second:
            outputs.append(self.new_slot(DTYPES[fused.second[4]]))
        rows, *geometry = fused._fixed[:-2]
        low, high = fused._fixed[-2:]
        ints = [rows, *geometry, low, high, int(fused.has_residual)]
        ints += [fused.residual_multiplier, fused._out_code, int(fused.linear), *fused.second]
        names = ("packed", "multiplier", "bias_unsigned", "bias_signed", "shift")
        return _Step(CONV, inputs, outputs, ints, [_buffer(fused, name) for name in names])

    def add_function(self, node: fx.Node) -> None:
        target = node.target
        if target is operator.getitem:
            self.add_getitem(node)
        elif target is F.pad:
            self.add_pad(node)
        elif target is torch.flatten:
            source = self.input_slot(node.args[0])
            start = _int_arg(node, 1, "start_dim", 0)
            end = _int_arg(node, 2, "end_dim", -1)
            out = self.new_slot(self.dtype[source])
            self.add(node, _Step(FLATTEN, [source], [out], [start, end]))
        elif target is torch.cat:
            self.add_cat(node)
        else:
            raise PlanUnsupportedError(f"function {target}")

    def add_getitem(self, node: fx.Node) -> None:
        source, index = node.args
        held = self.slot.get(source) if isinstance(source, fx.Node) else None
        if isinstance(held, list) and isinstance(index, int):
            self.slot[node] = held[index]  # one output of a two-output layer
            return
        parts = index if isinstance(index, tuple) else (index,)
        if not all(isinstance(part, slice) for part in parts):
            raise PlanUnsupportedError(f"index {index!r}")
        ints: list[int] = []
        for dim, part in enumerate(parts):
            if part == slice(None):
                continue
            start, stop, step = part.start, part.stop, part.step
            if not all(v is None or isinstance(v, int) for v in (start, stop, step)):
                raise PlanUnsupportedError(f"slice {part!r}")
            if step is not None and step < 1:
                raise PlanUnsupportedError(f"slice step {step}")
            ints += [dim, start or 0, _SLICE_END if stop is None else stop, step or 1]
        source_slot = self.input_slot(source)
        out = self.new_slot(self.dtype[source_slot])
        self.add(node, _Step(SLICE, [source_slot], [out], ints))

    def add_pad(self, node: fx.Node) -> None:
        source = self.input_slot(node.args[0])
        pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
        value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
        if mode != "constant" or value not in (None, 0, 0.0) or not isinstance(pad, tuple | list):
            raise PlanUnsupportedError("a pad other than zeros")
        out = self.new_slot(self.dtype[source])
        self.add(node, _Step(PAD, [source], [out], [int(p) for p in pad]))

    def add_cat(self, node: fx.Node) -> None:
        parts = node.args[0]
        if not isinstance(parts, list | tuple) or not parts:
            raise PlanUnsupportedError("cat of no list")
        dim = _int_arg(node, 1, "dim", 0)
        inputs = [self.input_slot(part) for part in parts]
        dtype = self.dtype[inputs[0]]
        for slot in inputs[1:]:
            dtype = torch.promote_types(dtype, self.dtype[slot])
        self.add(node, _Step(CAT, inputs, [self.new_slot(dtype)], [dim]))

    def compile(self, output: int) -> CompiledPlan:
        last_read = {slot: i for i, step in enumerate(self.steps) for slot in step.inputs}
        native = kernels().Plan(self.slots)
        for i, step in enumerate(self.steps):
            release = sorted(
                {s for s in step.inputs if last_read[s] == i and s != output}
                | {s for s in step.outputs if s not in last_read and s != output}
            )
            native.add(
                step.kind, step.inputs, step.outputs, [int(v) for v in step.ints],
                step.tensors, float(step.real), release,
            )  # fmt: skip
        return CompiledPlan(native, output, len(self.steps))
