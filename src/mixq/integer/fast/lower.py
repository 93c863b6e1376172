"""``lower``: the reference integer model rebuilt on the fast kernels, same integers."""

from __future__ import annotations

import copy
import operator
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from mixq.errors import IntegerConversionError
from mixq.integer.compile import IntegerModel
from mixq.integer.fast.build import kernels
from mixq.integer.fast.layers import (
    FastAddLevels,
    FastGlobalAvgPool,
    FastLayer,
    FastLookup,
    FastMaxPool,
    FastQuantizeInput,
    FastRequantize,
)
from mixq.integer.fast.plan import CompiledPlan, build_plan
from mixq.integer.ops import (
    AddLevels,
    GlobalAvgPool,
    IntegerLayer,
    Lookup,
    MaxPool,
    QuantizeInput,
    Requantize,
)

_FAST_MODULES: dict[type[nn.Module], type[nn.Module]] = {
    IntegerLayer: FastLayer,
    QuantizeInput: FastQuantizeInput,
    Requantize: FastRequantize,
    AddLevels: FastAddLevels,
    GlobalAvgPool: FastGlobalAvgPool,
    MaxPool: FastMaxPool,
    Lookup: FastLookup,
}


class FastIntegerModel(IntegerModel):
    """An :class:`~mixq.integer.IntegerModel` whose operations run on the C++ kernels;
    ``forward_integer`` returns int64, as the reference engine does.

    The graph runs as one C++ plan (:mod:`mixq.integer.fast.plan`) where every node has a
    step, built on the first call; ``use_plan = False`` runs it node by node instead (the
    profile does, to time each operation).
    """

    use_plan: bool = True

    def forward_integer(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            plan = self._compiled_plan() if self.use_plan else None
            if plan is not None and isinstance(x, Tensor) and x.device.type == "cpu":
                return plan.run(x)
            return self.graph_module(x).to(torch.int64)

    def _compiled_plan(self) -> CompiledPlan | None:
        if "_plan" not in self.__dict__:
            # Outside nn.Module's attributes: a native object is neither state nor picklable.
            self.__dict__["_plan"] = build_plan(self.graph_module)
        return self.__dict__["_plan"]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_plan", None)
        return state


def lower(model: IntegerModel) -> FastIntegerModel:
    """The same integer model on the fast kernels: every quantised layer one fused kernel
    call, the entrance, requantisations, additions and pooling in C++, the graph's
    reshapes, pads and slices unchanged (they act on levels of any integer type).

    Raises :class:`~mixq.errors.FastEngineUnavailableError` where the kernels cannot be
    built, before the model is copied.
    """
    if not isinstance(model, IntegerModel):
        raise IntegerConversionError(f"lower takes an IntegerModel, got {type(model).__name__}")
    kernels()
    graph_module = copy.deepcopy(model.graph_module)
    for name, module in list(graph_module.named_children()):
        fast = _FAST_MODULES.get(type(module))
        if fast is not None:
            setattr(graph_module, name, fast(module))
    _fuse_requantizations(graph_module)
    graph_module.recompile()
    return FastIntegerModel(graph_module, model.output_scale, model.layer_inputs, "fast")


def _fuse_requantizations(graph_module: fx.GraphModule) -> None:
    """A layer whose output a :class:`FastRequantize` also reads (a residual block's sum,
    which the next block's first conv takes on its own grid) writes both tensors in one
    epilogue: the layer's node returns a pair and the requantisation node goes."""
    modules = dict(graph_module.named_children())
    graph = graph_module.graph
    for node in list(graph.nodes):
        layer = modules.get(str(node.target)) if node.op == "call_module" else None
        if not isinstance(layer, FastLayer):
            continue
        requantize = next(
            (
                user
                for user in node.users
                if user.op == "call_module"
                and isinstance(modules.get(str(user.target)), FastRequantize)
            ),
            None,
        )
        if requantize is None:
            continue
        quant = modules[str(requantize.target)]
        assert isinstance(quant, FastRequantize)
        layer.fused.also_requantize(quant.multiplier, quant.shift, quant.low, quant.high)
        with graph.inserting_after(node):
            first = graph.call_function(operator.getitem, (node, 0))
        with graph.inserting_after(first):
            second = graph.call_function(operator.getitem, (node, 1))
        keep = {first, second}
        node.replace_all_uses_with(first, delete_user_cb=lambda user, keep=keep: user not in keep)
        requantize.replace_all_uses_with(second)
        graph.erase_node(requantize)
