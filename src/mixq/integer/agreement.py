"""Layer-by-layer agreement between a fake-quantised model and its integer model.

The deployed integer model is not float fake-quant's arithmetic: its shortcuts carry
16-bit levels, it averages after rounding and every requantisation is dyadic, so a value
near a midpoint between two levels can round the other way. What the exact evaluation
mode (:mod:`mixq.integer.exact`) evaluates is the integer model itself;
:func:`compare_layers` measures how far each layer's input levels are from fake-quant's:
teacher-forced (each fused layer is fed the fake-quantised model's input levels, so each
layer is judged alone) or free-running (differences may compound).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mixq.integer.compile import IntegerModel
from mixq.nn.layers import QUANT_LAYERS, QuantLayer


@dataclass(frozen=True)
class LayerAgreement:
    """How one quantised layer's input levels compare: integer engine against fake-quant."""

    name: str
    elements: int
    mismatches: int
    max_abs_diff: int

    @property
    def mismatch_rate(self) -> float:
        return self.mismatches / max(self.elements, 1)


def compare_layers(
    quantized: nn.Module,
    integer: IntegerModel,
    batches: Iterable[Tensor],
    *,
    teacher_forced: bool = True,
) -> list[LayerAgreement]:
    """Input levels of every quantised layer in both models, over ``batches`` of inputs."""
    totals: dict[str, list[int]] = {name: [0, 0, 0] for name in integer.layer_inputs}
    layers = {n: m for n, m in quantized.named_modules() if isinstance(m, QUANT_LAYERS)}
    modules = dict(integer.graph_module.named_modules())
    for x in batches:
        fake = _capture_fake(quantized, layers, x)
        exact = _capture_integer(integer, modules, x, fake if teacher_forced else None)
        for name, levels in exact.items():
            diff = (levels - fake[name]).abs()
            total = totals[name]
            total[0] += diff.numel()
            total[1] += int((diff > 0).sum())
            total[2] = max(total[2], int(diff.max()) if diff.numel() else 0)
    return [LayerAgreement(name, *values) for name, values in totals.items()]


def _capture_fake(model: nn.Module, layers: dict[str, QuantLayer], x: Tensor) -> dict[str, Tensor]:
    levels: dict[str, Tensor] = {}
    handles = []
    for name, layer in layers.items():
        if layer.act_quant is None:
            continue
        step = layer.act_quant.step

        def hook(
            _m: nn.Module, _i: object, out: Tensor, name: str = name, step: Tensor = step
        ) -> None:
            levels[name] = torch.round(out / step).to(torch.int64)

        handles.append(layer.act_quant.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    return levels


def _capture_integer(
    model: IntegerModel,
    modules: dict[str, nn.Module],
    x: Tensor,
    forced: dict[str, Tensor] | None,
) -> dict[str, Tensor]:
    levels: dict[str, Tensor] = {}
    handles = []
    for name, target in model.layer_inputs.items():

        def hook(_m: nn.Module, args: tuple[Tensor, ...], name: str = name) -> Any:
            levels[name] = args[0]
            # A forward pre-hook's return value replaces the module's inputs.
            return (forced[name], *args[1:]) if forced is not None else None

        handles.append(modules[target].register_forward_pre_hook(hook))
    try:
        model.forward_integer(x)
    finally:
        for handle in handles:
            handle.remove()
    return levels
