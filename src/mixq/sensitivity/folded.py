"""The float model as the quantiser sees it: BatchNorm folded into the convolutions.

Sensitivity is taken with respect to the weights that are quantised. For a conv followed by a
BatchNorm that is the folded weight ``W * gamma / sqrt(var + eps)``, so the Hessian is taken
on a reparametrised copy: each such conv becomes a plain conv whose weight *is* the folded
weight and whose bias is the folded bias, and the BN becomes ``nn.Identity``. In eval mode
(running statistics) this computes exactly what the original computes, and differentiating
with respect to the new conv's weight is differentiating with respect to the folded weight.
The fold itself is :class:`mixq.QuantConv2d`'s, so the two cannot drift apart.

Layers that are already quantised are baked back to float the same way, with their effective
weight, so a quantised checkpoint can be measured too (its activation quantisers drop out).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from mixq.assignment import RowAssignment
from mixq.errors import SensitivityError
from mixq.fold import find_conv_bn_pairs
from mixq.nn.layers import QuantConv2d, QuantLinear
from mixq.swap import quantizable_layer_names, set_submodule

_PLACEHOLDER = "fixed-8"  # any candidate: only the fold of the QuantConv2d is used


def folded_float_copy(model: nn.Module, *, fold_bn: bool = True) -> nn.Module:
    """A deep copy in eval mode with BN folded into its conv and quantised layers baked to
    float; Conv2d/Linear module names are unchanged.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3)).eval()
    >>> _ = net[1].running_var.fill_(4.0)
    >>> folded = folded_float_copy(net)
    >>> type(folded[1]).__name__, torch.allclose(folded[0].weight, net[0].weight / 2, atol=1e-3)
    ('Identity', True)
    """
    target = copy.deepcopy(model).eval()
    for name, module in list(target.named_modules()):
        if isinstance(module, QuantConv2d | QuantLinear):
            weight, bias = module.effective_weight_bias()
            set_submodule(target, name, _plain_copy(module, weight, bias))
    if not fold_bn:
        return target
    for conv_name, bn_name in find_conv_bn_pairs(target).items():
        conv = target.get_submodule(conv_name)
        bn = target.get_submodule(bn_name)
        # find_conv_bn_pairs pairs only a Conv2d with a BatchNorm2d
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        quant = QuantConv2d.from_float(
            conv, RowAssignment.uniform(_PLACEHOLDER, conv.out_channels), bn=bn, act_bits=0
        )
        weight, bias = quant.effective_weight_bias()
        set_submodule(target, conv_name, _plain_copy(conv, weight, bias))
        set_submodule(target, bn_name, nn.Identity())
    return target.eval()


def chosen_layers(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    """The Conv2d/Linear names of ``model`` to measure: ``layers`` (each once, in order),
    or every one when ``layers`` is None; unknown names or nothing to measure raise
    :class:`~mixq.errors.SensitivityError`.

    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> chosen_layers(net, None), chosen_layers(net, ["2", "0", "2"])
    (['0', '2'], ['2', '0'])
    """
    available = quantizable_layer_names(model)
    if layers is None:
        if not available:
            raise SensitivityError("the model has no Conv2d or Linear layer to measure")
        return available
    unknown = [name for name in layers if name not in available]
    if unknown:
        raise SensitivityError(
            f"no Conv2d/Linear layer named {unknown}; the model has: {', '.join(available)}"
        )
    if not layers:
        raise SensitivityError("no layers to measure (an empty list was given)")
    return list(dict.fromkeys(layers))


def layer_weight(model: nn.Module, name: str) -> torch.Tensor:
    """The detached weight of the layer ``name`` (a mapped type may lack a tensor weight)."""
    weight = model.get_submodule(name).weight
    if not isinstance(weight, torch.Tensor):
        raise SensitivityError(f"layer {name!r} has no weight tensor to measure")
    return weight.detach()


@torch.no_grad()
def _plain_copy(
    layer: nn.Conv2d | nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None
) -> nn.Module:
    """A plain ``nn.Conv2d``/``nn.Linear`` with ``layer``'s geometry and the given tensors."""
    factory = {"device": weight.device, "dtype": weight.dtype}
    plain: nn.Conv2d | nn.Linear
    if isinstance(layer, nn.Conv2d):
        plain = nn.Conv2d(
            layer.in_channels,
            layer.out_channels,
            _pair(layer.kernel_size),
            stride=_pair(layer.stride),
            padding=layer.padding if isinstance(layer.padding, str) else _pair(layer.padding),
            dilation=_pair(layer.dilation),
            groups=layer.groups,
            bias=bias is not None,
            padding_mode=layer.padding_mode,
            **factory,
        )
    else:
        plain = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None, **factory)
    plain.weight.copy_(weight.detach())
    if bias is not None and plain.bias is not None:  # plain has a bias exactly when given one
        plain.bias.copy_(bias.detach())
    return plain


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d size attribute (always two entries) as the pair its constructor takes."""
    height, width = values
    return height, width
