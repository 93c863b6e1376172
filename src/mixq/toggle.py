"""Switching quantisation off and on, for float/quantised comparisons of one model."""

from __future__ import annotations

from torch import nn

from mixq.nn.act_quant import ActQuantizer
from mixq.nn.weight_quant import RowWeightQuantizer


def set_quantization(
    model: nn.Module, *, weights: bool | None = None, activations: bool | None = None
) -> None:
    """Enable or disable weight and/or activation quantisation everywhere (None: unchanged).

    With both disabled, a model with folded BN computes exactly what the float model does.
    """
    for module in model.modules():
        if weights is not None and isinstance(module, RowWeightQuantizer):
            module.enabled = weights
        if activations is not None and isinstance(module, ActQuantizer):
            module.enabled = activations
