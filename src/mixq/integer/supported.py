"""The one definition of what the integer engine runs: the fx targets every graph walker
(``to_integer``, the exporters) accepts, and a check that lists every unsupported op of a
traced model at once.

>>> import torch
>>> from torch import nn
>>> from mixq.integer.compile import trace_quantized
>>> net = nn.Sequential(nn.ReLU(), nn.GELU(), nn.Tanh())
>>> unsupported_ops(trace_quantized(net), dict(net.named_modules()))
["'1' (GELU)", "'2' (Tanh)"]
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from mixq.errors import UnsupportedLayerError
from mixq.nn.layers import QUANT_LAYERS

RELU_FUNCTIONS = (F.relu, torch.relu)
RELU6_FUNCTIONS = (F.relu6,)
CLAMP_FUNCTIONS = (torch.clamp, torch.clip, F.hardtanh)
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
CAT_FUNCTIONS = (torch.cat, torch.concat)
SHAPE_FUNCTIONS = (torch.flatten, torch.reshape, operator.getitem, getattr)
SHAPE_METHODS = frozenset(
    {"view", "reshape", "flatten", "contiguous", "size", "squeeze", "unsqueeze"}
)
SHAPE_MODULES = (nn.Flatten, nn.Identity, nn.Dropout)
CLAMP_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
# Elementwise functions run as exact lookup tables on 8-bit (or narrower) input levels.
TABLE_MODULES = (nn.Hardswish, nn.SiLU, nn.Sigmoid)
TABLE_FUNCTIONS = (F.hardswish, F.silu, torch.sigmoid, F.sigmoid)
TABLE_METHODS = frozenset({"sigmoid"})
CLAMP_METHODS = frozenset({"relu", "clamp", "clip"})


def is_global(size: Any) -> bool:
    """Whether an adaptive pooling output size is ``1`` or ``(1, 1)`` (global pooling)."""
    if size is None or isinstance(size, int):
        return size == 1
    return tuple(size) in ((1,), (1, 1))


def is_zero_pad(node: fx.Node) -> bool:
    """Whether an ``F.pad`` call pads with zeros (which integers at any scale can do)."""
    mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
    value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
    return bool(mode == "constant" and (value is None or value == 0))


def supported_max_pool(module: nn.MaxPool2d) -> bool:
    """Max pooling the engine runs: any padding (padded with the lowest level), square
    windows, no dilation, no ceil mode, no indices."""
    sizes = [module.kernel_size, module.stride or module.kernel_size, module.padding]
    square = all(not isinstance(s, tuple) or len(set(s)) == 1 for s in sizes)
    return bool(
        square
        and _single(module.dilation) == 1
        and not module.ceil_mode
        and not module.return_indices
    )


def _single(value: Any) -> int:
    return int(value[0]) if isinstance(value, tuple) else int(value)


def unsupported_reason(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """Why the engine cannot run ``node`` (its op, named), or None when it can."""
    if node.op in ("placeholder", "output", "get_attr"):
        return None if node.op != "get_attr" else "a constant tensor"
    if node.op == "call_module":
        return _module_reason(modules[str(node.target)])
    if node.op == "call_function":
        return _function_reason(node)
    if node.op == "call_method":
        supported = SHAPE_METHODS | CLAMP_METHODS | TABLE_METHODS | {"add"}
        return None if node.target in supported else f"method {node.target}"
    return node.op


def _module_reason(module: nn.Module) -> str | None:
    name = type(module).__name__
    if isinstance(module, (*QUANT_LAYERS, *CLAMP_MODULES, *SHAPE_MODULES, *TABLE_MODULES)):
        return None
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return None if is_global(module.output_size) else f"{name} to {module.output_size}"
    if isinstance(module, nn.MaxPool2d):
        return None if supported_max_pool(module) else f"{name} with dilation or ceil mode"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return f"{name} not folded into a quantised convolution"
    if type(module).__name__ == "Add" and not list(module.parameters()):
        return None  # the models' residual-add module (a + b)
    return name


def _function_reason(node: fx.Node) -> str | None:
    target = node.target
    name = getattr(target, "__name__", str(target))
    if target is F.pad:
        return None if is_zero_pad(node) else "pad with a non-zero value or mode"
    if target is F.adaptive_avg_pool2d:
        return None if is_global(node.args[1]) else f"{name} to {node.args[1]}"
    known = (
        *RELU_FUNCTIONS,
        *RELU6_FUNCTIONS,
        *CLAMP_FUNCTIONS,
        *ADD_FUNCTIONS,
        *CAT_FUNCTIONS,
        *SHAPE_FUNCTIONS,
        *TABLE_FUNCTIONS,
    )
    return None if target in known else name


def unsupported_ops(graph: fx.Graph, modules: dict[str, nn.Module]) -> list[str]:
    """Every node of ``graph`` the engine cannot run, as ``'module name' (op)``."""
    found = []
    for node in graph.nodes:
        reason = unsupported_reason(node, modules)
        if reason is not None:
            where = str(node.target) if node.op == "call_module" else node.name
            found.append(f"{where!r} ({reason})")
    return found


def check_supported(graph: fx.Graph, modules: dict[str, nn.Module]) -> None:
    """Raise one :class:`UnsupportedLayerError` naming every unsupported op, if any."""
    found = unsupported_ops(graph, modules)
    if found:
        raise UnsupportedLayerError(
            f"the integer engine cannot run {len(found)} op(s): {', '.join(found)}; it runs "
            "quantised Conv2d/Linear (grouped and depthwise too), ReLU, ReLU6, clamp, "
            "Hardswish/SiLU/Sigmoid (as lookup tables), residual additions, cat, global "
            "average pooling, max pooling, zero padding and reshapes"
        )
