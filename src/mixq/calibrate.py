"""Activation calibration: run a few batches, then set every clip level from what was seen.

Under ``torch.distributed`` each process calibrates on its own batches and the clip levels
are those of one process calibrating on every process's batches, rank 0's first (PyTorch's
own observers keep per-process ranges: pytorch/pytorch#85627). A first pass counts the
values each batch gives every quantiser, so that each process subsamples its batches as
that one process would; the kept values and the least value are then gathered in rank
order, and rank 0's clip levels are broadcast (one choice, whatever the thread counts).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Sized
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from mixq.batches import check_batches, model_device, run_batch, run_checked
from mixq.distributed_env import broadcast_from_main, gather_objects, is_distributed
from mixq.errors import CalibrationDataWarning, CalibrationError
from mixq.nn.act_quant import MAX_SAMPLES, ActQuantizer
from mixq.weight_reuse import ReusedWeightQuantization

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
    distributed = is_distributed()
    try:
        # The weights stay as they are: each is fake-quantised once, not once per batch.
        with ReusedWeightQuantization(model):
            if distributed:
                _align_subsampling(model, taken, device, named)
            else:
                for q in quantizers:
                    q.start_calibration()
            for index, batch in enumerate(
                tqdm(taken, desc="calibrate", disable=None if progress else True, leave=False),
                start=1,
            ):
                run_checked(model, batch, device, index)
        if distributed:
            _gather_observations(named)
        for name, q in named:
            try:
                q.finish_calibration()
            except CalibrationError as exc:
                raise CalibrationError(
                    f"{name}: {exc} (is the layer on the forward path?)"
                ) from None
        if distributed:
            _broadcast_clips(named)
    finally:
        for q in quantizers:
            q._samples = None
        model.train(was_training)
    return len(taken)


def _align_subsampling(
    model: nn.Module, taken: list[Any], device: torch.device, named: list[tuple[str, ActQuantizer]]
) -> None:
    """Count the values every batch gives each quantiser on every rank, then start each
    quantiser's calibration with its generator past the lower ranks' batches."""
    for _, q in named:
        q.start_calibration(counting=True)
    for index, batch in enumerate(taken, start=1):
        run_checked(model, batch, device, index)
    sizes = gather_objects({name: q.observed_sizes for name, q in named})
    rank = dist.get_rank()
    for name, q in named:
        q.start_calibration()
        for lower in sizes[:rank]:
            q.skip_draws(lower[name])


def _gather_observations(named: list[tuple[str, ActQuantizer]]) -> None:
    """Every quantiser's kept values from all ranks, in rank order, and the least value."""
    local = {}
    for name, q in named:
        sample, minimum = q.observations()
        local[name] = (sample[-MAX_SAMPLES:], minimum)  # the union keeps no more
    everyone = gather_objects(local)
    for name, q in named:
        parts = [rank_observations[name] for rank_observations in everyone]
        q.set_observations(torch.cat([p[0] for p in parts]), min(p[1] for p in parts))


def _broadcast_clips(named: list[tuple[str, ActQuantizer]]) -> None:
    clips = broadcast_from_main({name: (q.alpha.detach().clone(), q.signed) for name, q in named})
    with torch.no_grad():
        for name, q in named:
            alpha, q.signed = clips[name]
            q.alpha.copy_(alpha)
