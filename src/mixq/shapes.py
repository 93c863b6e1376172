"""Measuring each Conv2d/Linear layer's shape (:class:`mixq.plan.LayerShape`) with one
forward pass, so that cost models and budgets never guess input sizes."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from mixq.layer_hooks import run_with_layer_hooks
from mixq.plan import LayerShape


def measure_layer_shapes(model: nn.Module, example: Any) -> dict[str, LayerShape]:
    """Shapes of every Conv2d/Linear (quantised or not) for one sample of ``example``.

    ``example`` is a batch as :func:`mixq.calibrate` takes it; figures are per sample. A
    batch the model cannot take raises :class:`~mixq.errors.CalibrationError`.
    """
    shapes: dict[str, LayerShape] = {}

    def record(name: str, module: nn.Conv2d | nn.Linear, x: Tensor, output: Tensor) -> None:
        shapes[name] = _layer_shape(name, module, x, output)

    run_with_layer_hooks(model, example, record)
    return shapes


def _layer_shape(name: str, module: nn.Conv2d | nn.Linear, x: Tensor, output: Tensor) -> LayerShape:
    batch = x.shape[0] if x.dim() > 1 else 1
    rows = module.weight.shape[0]
    if isinstance(module, nn.Conv2d):
        positions = output.shape[-1] * output.shape[-2]
        kind = "conv2d"
    else:
        positions = output.numel() // batch // rows
        kind = "linear"
    return LayerShape(
        name=name,
        kind=kind,
        rows=rows,
        macs_per_row=module.weight[0].numel(),
        positions=int(positions),
        input_elements=x.numel() // batch,
        output_elements=output.numel() // batch,
    )
