"""Activation calibration: run a few batches, then set every clip level from what was seen."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from mixq.errors import CalibrationError
from mixq.nn.act_quant import ActQuantizer


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def run_batch(model: nn.Module, batch: Any, device: torch.device) -> Any:
    """Feed one batch: a tensor, an ``(input, target, ...)`` sequence, or keyword inputs."""
    if isinstance(batch, torch.Tensor):
        return model(batch.to(device))
    if isinstance(batch, dict):
        return model(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()})
    if isinstance(batch, list | tuple) and batch:
        return model(batch[0].to(device))
    raise CalibrationError(f"cannot feed a batch of type {type(batch).__name__} to the model")


@torch.no_grad()
def calibrate(
    model: nn.Module, data: Iterable[Any], *, batches: int = 8, progress: bool = True
) -> int:
    """Calibrate every activation quantiser of ``model`` on up to ``batches`` batches.

    Returns the number of batches used; an empty ``data`` raises :class:`CalibrationError`.
    """
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, ActQuantizer)]
    quantizers = [m for _, m in named]
    if not quantizers:
        return 0
    if batches < 1:
        raise CalibrationError(f"calibration needs at least one batch, got batches={batches}")
    was_training = model.training
    model.eval()
    device = model_device(model)
    for q in quantizers:
        q.start_calibration()
    used = 0
    try:
        stream = itertools.islice(data, batches)
        for batch in tqdm(
            stream, total=batches, desc="calibrate", disable=not progress, leave=False
        ):
            run_batch(model, batch, device)
            used += 1
        if used == 0:
            raise CalibrationError("the calibration data yielded no batches")
        for name, q in named:
            try:
                q.finish_calibration()
            except CalibrationError as exc:
                raise CalibrationError(
                    f"{name}: {exc} (is the layer on the forward path?)"
                ) from None
    finally:
        for q in quantizers:
            q._samples = None
        model.train(was_training)
    return used
