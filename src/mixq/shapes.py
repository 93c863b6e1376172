"""Measuring each Conv2d/Linear layer's shape (:class:`mixq.plan.LayerShape`) with one
forward pass, so that cost models and budgets never guess input sizes."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mixq.batches import check_batches, model_device, run_checked
from mixq.plan import LayerShape


@torch.no_grad()
def measure_layer_shapes(model: nn.Module, example: Any) -> dict[str, LayerShape]:
    """Shapes of every Conv2d/Linear (quantised or not) for one sample of ``example``.

    ``example`` is a batch as :func:`mixq.calibrate` takes it; figures are per sample. A
    batch the model cannot take raises :class:`~mixq.errors.CalibrationError`.
    """
    check_batches([example])
    shapes: dict[str, LayerShape] = {}
    handles = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            x = args[0]
            batch = x.shape[0] if x.dim() > 1 else 1
            weight = module.weight
            if isinstance(module, nn.Conv2d):
                positions = output.shape[-1] * output.shape[-2]
                kind = "conv2d"
            else:
                positions = output.numel() // batch // weight.shape[0]
                kind = "linear"
            shapes[name] = LayerShape(
                name=name,
                kind=kind,
                rows=weight.shape[0],
                macs_per_row=weight[0].numel(),
                positions=int(positions),
                input_elements=x.numel() // batch,
                output_elements=output.numel() // batch,
            )

        return record

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        run_checked(model, example, model_device(model), 1)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return shapes
