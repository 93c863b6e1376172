"""Hessian-vector products of a model's loss with respect to chosen weights (``torch.func``).

``Hv`` is the derivative of the gradient along ``v``. Forward-over-reverse (``jvp`` of
``grad``) computes it in one forward-mode pass through the backward graph and is usually the
cheapest; reverse-over-reverse (``vjp`` of ``grad``, i.e. double backprop) works for every
operator that has a second derivative and serves as a cross-check.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from mixq.errors import SensitivityError
from mixq.sensitivity.config import HVP_MODES, HvpMode

Weights = dict[str, Tensor]  # parameter name ("layer1.0.conv1.weight") -> tensor
LossFn = Callable[[Tensor, Tensor], Tensor]
Hvp = Callable[[Weights, Weights, Tensor, Tensor], Weights]
# hvps(weights, vs, inputs, targets, shared): vs hold K probes on a leading axis; inputs and
# targets too (one batch per probe), unless ``shared`` (one batch for all K probes).
BatchedHvp = Callable[[Weights, Weights, Tensor, Tensor, bool], Weights]


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
        # PyTorch's fused CPU attention kernels have neither forward-mode AD nor a double
        # backward; the math kernel computes the same attention with both.
        with sdpa_kernel(SDPBackend.MATH):
            return loss_fn(functional_call(model, weights, (inputs,)), targets)

    gradient = grad(loss_of)

    # Without has_aux, jvp gives (output, tangent) and vjp (output, pullback); torch types
    # both as "that or a triple", so the second item is taken by index.
    def forward_over_reverse(
        weights: Weights, v: Weights, inputs: Tensor, targets: Tensor
    ) -> Weights:
        hv: Weights = jvp(lambda w: gradient(w, inputs, targets), (weights,), (v,))[1]
        return hv

    def reverse_over_reverse(
        weights: Weights, v: Weights, inputs: Tensor, targets: Tensor
    ) -> Weights:
        pullback = vjp(lambda w: gradient(w, inputs, targets), weights)[1]
        hv: Weights = pullback(v)[0]
        return hv

    return forward_over_reverse if mode == "forward-over-reverse" else reverse_over_reverse


def make_batched_hvp(
    model: nn.Module, loss_fn: LossFn, mode: HvpMode = "forward-over-reverse"
) -> BatchedHvp:
    """``K`` Hessian-vector products in one vectorised call (``torch.func.vmap`` over the
    probes): each probe's product is exactly what :func:`make_hvp` gives for it, but the
    probes share kernels and, on one shared batch, the forward and backward of the primal.

    >>> import torch
    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> hvps = make_batched_hvp(net, lambda out, y: out.pow(2).sum())
    >>> w = {"weight": torch.tensor([[1.0, 2.0]])}
    >>> x = torch.tensor([[1.0, 3.0]])
    >>> vs = {"weight": torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])}  # two probes
    >>> hvps(w, vs, x, x, True)["weight"]  # H = 2 x^T x, one row per probe
    tensor([[[ 2.,  6.]],
    <BLANKLINE>
            [[ 6., 18.]]])
    """
    single = make_hvp(model, loss_fn, mode)

    def batched(
        weights: Weights, vs: Weights, inputs: Tensor, targets: Tensor, shared: bool
    ) -> Weights:
        def one(v: Weights, x: Tensor, y: Tensor) -> Weights:
            return single(weights, v, x, y)

        in_dims = (0, None, None) if shared else (0, 0, 0)
        return vmap(one, in_dims=in_dims)(vs, inputs, targets)

    return batched
