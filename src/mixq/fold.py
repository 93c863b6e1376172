"""Finding each Conv2d whose output feeds only a BatchNorm2d, so the BN can be folded."""

from __future__ import annotations

import warnings

import torch.fx as fx
from torch import nn


def find_conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """``{conv name: bn name}`` for every conv whose only consumer is a BN of its width.

    Found by tracing the graph (module order says nothing about data flow). A model that
    torch.fx cannot trace gets no folding, with a warning if it has BatchNorm layers.
    """
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types on untraceable Python control flow
        if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
            warnings.warn(
                f"BatchNorm layers are not folded: torch.fx could not trace the model ({exc})",
                stacklevel=3,
            )
        return {}
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs: dict[str, str] = {}
    for node in graph.nodes:
        if not _is_call_of(node, modules, nn.Conv2d) or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if not _is_call_of(user, modules, nn.BatchNorm2d) or user.args[0] is not node:
            continue
        conv, bn = modules[node.target], modules[user.target]
        # A module called at two places cannot be folded for one of them only.
        if calls[node.target] == 1 and calls[user.target] == 1 and _foldable(conv, bn):
            pairs[str(node.target)] = str(user.target)
    return pairs


def _is_call_of(node: fx.Node, modules: dict[str, nn.Module], kind: type) -> bool:
    return node.op == "call_module" and isinstance(modules.get(str(node.target)), kind)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(bn, nn.BatchNorm2d)
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.num_features == conv.out_channels
    )
