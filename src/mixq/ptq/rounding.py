"""Applying error-feedback rounding to every quantised layer of a model, in one pass.

Each layer is rounded once every calibration batch has reached it, with the inputs the
layers already rounded produce (and the calibrated activation quantisers), so later layers
compensate for the errors of earlier ones. The batches advance through the model in
lockstep (:mod:`mixq.ptq.lockstep`): the model runs once over the data, not once per layer,
so the cost grows linearly with depth. Models whose batches do not visit the layers once
each in one order fall back to the layer-by-layer loop, one full forward per layer.
Under ``torch.distributed`` each rank passes its own share of the batches; the second
moments are summed over ranks before each layer is rounded, so every rank rounds the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mixq.calibrate import model_device, run_batch
from mixq.errors import CalibrationError
from mixq.nn.layers import QUANT_LAYERS, QuantLayer
from mixq.ptq.columns import column_quantizer
from mixq.ptq.gptq import gptq_rows
from mixq.ptq.lockstep import LockstepOrderError, run_in_lockstep
from mixq.ptq.moments import MOMENT_DTYPE, SecondMoment, supports_error_feedback
from mixq.weight_reuse import ReusedWeightQuantization

__all__ = ["apply_error_feedback", "apply_error_feedback_layerwise", "supports_error_feedback"]


@torch.no_grad()
def apply_error_feedback(
    model: nn.Module,
    data: Iterable[Any],
    *,
    batches: int = 8,
    progress: bool = True,
    moment_dtype: torch.dtype = MOMENT_DTYPE,
) -> list[str]:
    """Round every quantised layer's weights with GPTQ error feedback; returns their names."""
    layers = _rounded_layers(model)
    cached = _cache(data, batches)
    saved = {name: layer.weight.detach().clone() for name, layer in layers}
    moments = {id(layer): SecondMoment(moment_dtype) for _, layer in layers}
    bar = tqdm(total=len(layers), desc="round", disable=None if progress else True, leave=False)

    by_id = {id(layer): layer for _, layer in layers}

    # Every batch passes a layer before any passes the next: each weight is fake-quantised
    # once, not once per batch, and kept only until the next layer is rounded.
    reuse = ReusedWeightQuantization(model)

    def at_layer(module: nn.Module) -> None:  # lockstep calls it with the layers it was given
        layer = by_id[id(module)]
        moment = moments[id(layer)]
        moment.all_reduce()
        reuse.forget()
        _round_layer(layer, moment.matrix.to(layer.weight.device))
        moment.release()  # no longer needed: the layers' moments need not all fit at once
        bar.update()

    try:
        with _eval_mode(model), reuse:
            reached = run_in_lockstep(
                model,
                cached,
                model_device(model),
                [layer for _, layer in layers],
                lambda layer: moments[id(layer)],
                at_layer,
            )
    except LockstepOrderError:
        for name, layer in layers:
            layer.weight.copy_(saved[name])
        return apply_error_feedback_layerwise(
            model, cached, batches=batches, progress=progress, moment_dtype=moment_dtype
        )
    finally:
        bar.close()
    if len(reached) < len(layers):
        missed = [name for name, layer in layers if not any(layer is r for r in reached)]
        raise CalibrationError(f"layers saw no input during error-feedback rounding: {missed}")
    return [name for name, _ in layers]


@torch.no_grad()
def apply_error_feedback_layerwise(
    model: nn.Module,
    data: Iterable[Any],
    *,
    batches: int = 8,
    progress: bool = True,
    moment_dtype: torch.dtype = MOMENT_DTYPE,
) -> list[str]:
    """The same rounding, one full pass over the data per layer, in module order: the
    reference the one-pass method is tested against, and its fallback."""
    layers = _rounded_layers(model)
    cached = _cache(data, batches)
    device = model_device(model)
    with _eval_mode(model):
        for _, layer in tqdm(layers, desc="round", disable=None if progress else True, leave=False):
            moment = SecondMoment(moment_dtype)
            handle = layer.register_forward_pre_hook(moment)
            try:
                for batch in cached:
                    run_batch(model, batch, device)
            finally:
                handle.remove()
            moment.all_reduce()
            _round_layer(layer, moment.matrix.to(layer.weight.device))
    return [name for name, _ in layers]


def _rounded_layers(model: nn.Module) -> list[tuple[str, QuantLayer]]:
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, QUANT_LAYERS) and supports_error_feedback(m)
    ]


def _cache(data: Iterable[Any], batches: int) -> list[Any]:
    if batches < 1:
        raise CalibrationError(f"error-feedback rounding needs batches >= 1, got {batches}")
    cached = list(itertools.islice(data, batches))
    if not cached:
        raise CalibrationError("error-feedback rounding needs data; the loader yielded nothing")
    return cached


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the block, then back to its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _round_layer(layer: QuantLayer, hessian: Tensor) -> None:
    w_rows = layer.weight_rows().detach()
    rounded = gptq_rows(w_rows, hessian, column_quantizer(layer.weight_quant, w_rows.dtype))
    layer.set_effective_weight(rounded)
