"""Switching quantisation off and on, for float/quantised comparisons of one model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from mixq.nn.act_quant import ActQuantizer
from mixq.nn.weight_quant import RowWeightQuantizer


def set_quantization(
    model: nn.Module, *, weights: bool | None = None, activations: bool | None = None
) -> None:
    """Enable or disable weight and/or activation quantisation everywhere (None: unchanged).

    With both disabled, a model with folded BN computes exactly what the float model does,
    unless error-feedback (GPTQ) rounding ran: it replaces the weights by their rounded
    values, which then stand in for the float ones.
    """
    for module in model.modules():
        if weights is not None and isinstance(module, RowWeightQuantizer):
            module.enabled = weights
        if activations is not None and isinstance(module, ActQuantizer):
            module.enabled = activations


@contextmanager
def quantization_disabled(
    model: nn.Module, *, weights: bool = True, activations: bool = True
) -> Iterator[nn.Module]:
    """Run a block with weight and/or activation quantisation off, restoring it after.

    >>> import torch, mixq
    >>> net = mixq.quantize(torch.nn.Linear(4, 2), "fixed4", progress=False)
    >>> with quantization_disabled(net, activations=False):
    ...     net.weight_quant.enabled
    False
    >>> net.weight_quant.enabled
    True
    """
    saved = [
        (m, m.enabled) for m in model.modules() if isinstance(m, RowWeightQuantizer | ActQuantizer)
    ]
    set_quantization(
        model, weights=False if weights else None, activations=False if activations else None
    )
    try:
        yield model
    finally:
        for module, enabled in saved:
            module.enabled = enabled
