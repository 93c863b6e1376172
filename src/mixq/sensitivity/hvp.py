"""Hessian-vector products of a model's loss with respect to chosen weights (``torch.func``).

``Hv`` is the derivative of the gradient along ``v``. Forward-over-reverse (``jvp`` of
``grad``) computes it in one forward-mode pass through the backward graph and is usually the
cheapest; reverse-over-reverse (``vjp`` of ``grad``, i.e. double backprop) works for every
operator that has a second derivative and serves as a cross-check.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp

from mixq.errors import SensitivityError
from mixq.sensitivity.config import HVP_MODES, HvpMode

Weights = dict[str, Tensor]  # parameter name ("layer1.0.conv1.weight") -> tensor
LossFn = Callable[[Tensor, Tensor], Tensor]
Hvp = Callable[[Weights, Weights, Tensor, Tensor], Weights]


def make_hvp(model: nn.Module, loss_fn: LossFn, mode: HvpMode = "forward-over-reverse") -> Hvp:
    """``hvp(weights, v, inputs, targets)``: the Hessian of ``loss_fn(model(inputs), targets)``
    with respect to ``weights`` (a subset of the model's parameters, by name) times ``v``.

    >>> import torch
    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> hvp = make_hvp(net, lambda out, y: out.pow(2).sum())
    >>> w = {"weight": torch.tensor([[1.0, 2.0]])}
    >>> x = torch.tensor([[1.0, 3.0]])
    >>> hvp(w, {"weight": torch.tensor([[1.0, 0.0]])}, x, x)["weight"]  # H = 2 x^T x
    tensor([[2., 6.]])
    """
    if mode not in HVP_MODES:
        raise SensitivityError(f"unknown HVP mode {mode!r}; use one of {', '.join(HVP_MODES)}")

    def loss_of(weights: Weights, inputs: Tensor, targets: Tensor) -> Tensor:
        return loss_fn(functional_call(model, weights, (inputs,)), targets)

    gradient = grad(loss_of)

    def forward_over_reverse(weights: Weights, v: Weights, inputs: Tensor, targets: Tensor):
        _, hv = jvp(lambda w: gradient(w, inputs, targets), (weights,), (v,))
        return hv

    def reverse_over_reverse(weights: Weights, v: Weights, inputs: Tensor, targets: Tensor):
        _, pullback = vjp(lambda w: gradient(w, inputs, targets), weights)
        return pullback(v)[0]

    return forward_over_reverse if mode == "forward-over-reverse" else reverse_over_reverse
