"""Applying error-feedback rounding to every quantised layer of a model, layer by layer.

Layers are processed in module order; each one sees inputs produced by the layers already
rounded (and the calibrated activation quantisers), so later layers compensate for the
errors of earlier ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from mixq.calibrate import model_device, run_batch
from mixq.errors import CalibrationError
from mixq.nn.layers import QUANT_LAYERS, QuantConv2d
from mixq.ptq.gptq import gptq_rows


class _SecondMoment:
    """Accumulates ``E[x x^T]`` of a layer's (quantised) input, as the layer sees it."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.sum: Tensor | None = None
        self.count = 0

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        if module.act_quant is not None:
            x = module.act_quant(x)
        cols = _input_columns(module, x)  # (N, C)
        outer = cols.T.double() @ cols.double()
        self.sum = outer if self.sum is None else self.sum + outer
        self.count += cols.shape[0]

    @property
    def matrix(self) -> Tensor:
        if self.sum is None or self.count == 0:
            raise CalibrationError("layer saw no input during error-feedback rounding")
        return self.sum / self.count


def _input_columns(layer: nn.Module, x: Tensor) -> Tensor:
    if isinstance(layer, QuantConv2d):
        patches = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])  # (B*L, Cin*kh*kw)
    return x.reshape(-1, x.shape[-1])


def supports_error_feedback(layer: nn.Module) -> bool:
    """Grouped convolutions have one input matrix per group; they keep nearest rounding."""
    if isinstance(layer, QuantConv2d):
        return layer.groups == 1 and layer.padding_mode == "zeros"
    return True


@torch.no_grad()
def apply_error_feedback(
    model: nn.Module, data: Iterable[Any], *, batches: int = 8, progress: bool = True
) -> list[str]:
    """Round every quantised layer's weights with GPTQ error feedback; returns their names."""
    layers = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, QUANT_LAYERS) and supports_error_feedback(m)
    ]
    cached = list(itertools.islice(data, batches))
    if not cached:
        raise CalibrationError("error-feedback rounding needs data; the loader yielded nothing")
    was_training = model.training
    model.eval()
    device = model_device(model)
    try:
        for _, layer in tqdm(layers, desc="round", disable=not progress, leave=False):
            moment = _SecondMoment(layer)
            handle = layer.register_forward_pre_hook(moment)
            try:
                for batch in cached:
                    run_batch(model, batch, device)
            finally:
                handle.remove()
            _round_layer(layer, moment.matrix.to(layer.weight.device))
    finally:
        model.train(was_training)
    return [name for name, _ in layers]


def _round_layer(layer: nn.Module, hessian: Tensor) -> None:
    w_rows = layer.weight_rows().detach()
    quantizer = layer.weight_quant
    rounded = gptq_rows(w_rows, hessian, lambda col: quantizer(col.unsqueeze(1)).squeeze(1))
    layer.set_effective_weight(rounded)
