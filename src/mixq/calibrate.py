"""Activation calibration: run a few batches, then set every clip level from what was seen."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Sized
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from mixq.batches import check_batches, model_device, run_batch, run_checked
from mixq.errors import CalibrationDataWarning, CalibrationError
from mixq.nn.act_quant import ActQuantizer

DEFAULT_BATCHES = 8

__all__ = ["DEFAULT_BATCHES", "calibrate", "model_device", "run_batch", "take_batches"]


def take_batches(data: Iterable[Any], batches: int | None) -> list[Any]:
    """The first ``batches`` batches of ``data`` (default :data:`DEFAULT_BATCHES`), checked.

    Without an explicit ``batches``, data with more batches than the default gives a
    :class:`~mixq.errors.CalibrationDataWarning` saying how many were used.
    """
    explicit = batches is not None
    count = DEFAULT_BATCHES if batches is None else batches
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise CalibrationError(f"calibration needs at least one batch, got batches={count!r}")
    if isinstance(data, torch.Tensor | dict) or not isinstance(data, Iterable):
        raise CalibrationError(
            f"calibration data must be an iterable of batches (a list or a DataLoader), got "
            f"{type(data).__name__}; wrap a single batch in a list"
        )
    taken = list(itertools.islice(data, count + (0 if explicit else 1)))
    if not taken:
        raise CalibrationError("the calibration data yielded no batches")
    if len(taken) > count:
        total = f"{len(data)}" if isinstance(data, Sized) else f"more than {count}"
        warnings.warn(
            f"calibration uses the first {count} of {total} batches; pass "
            "calibration_batches=N to choose how many",
            CalibrationDataWarning,
            stacklevel=3,
        )
        taken = taken[:count]
    check_batches(taken)
    return taken


@torch.no_grad()
def calibrate(
    model: nn.Module, data: Iterable[Any], *, batches: int | None = None, progress: bool = True
) -> int:
    """Calibrate every activation quantiser of ``model`` on up to ``batches`` batches
    (default 8; more in ``data`` without an explicit ``batches`` warns how many were used).

    Returns the number of batches used. Empty data, or batches of a form or shape the model
    cannot take, raise :class:`CalibrationError` before the clip levels change.
    """
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, ActQuantizer)]
    quantizers = [m for _, m in named]
    if not quantizers:
        return 0
    taken = take_batches(data, batches)
    was_training = model.training
    model.eval()
    device = model_device(model)
    for q in quantizers:
        q.start_calibration()
    try:
        for index, batch in enumerate(
            tqdm(taken, desc="calibrate", disable=not progress, leave=False), start=1
        ):
            run_checked(model, batch, device, index)
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
    return len(taken)
