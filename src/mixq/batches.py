"""Feeding batches to a model: the one definition of what a batch is, shared by calibration,
rounding, shape measurement and latency runs.

A batch is a tensor (the model input), a non-empty ``(input, target, ...)`` sequence whose
first item is a tensor, or a dict of keyword inputs. A batch that is none of these, or that
the model cannot take, ends in :class:`~mixq.errors.CalibrationError` saying which batch and
why, before any further work.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mixq.errors import CalibrationError, MixqError


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def run_batch(model: nn.Module, batch: Any, device: torch.device) -> Any:
    """Feed one batch: a tensor, an ``(input, target, ...)`` sequence, or keyword inputs."""
    if isinstance(batch, torch.Tensor):
        return model(batch.to(device))
    if isinstance(batch, dict):
        return model(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()})
    if isinstance(batch, list | tuple) and batch and torch.is_tensor(batch[0]):
        return model(batch[0].to(device))
    raise CalibrationError(f"cannot feed a batch of {describe_batch(batch)} to the model")


def describe_batch(batch: Any) -> str:
    """A short description of a batch for messages: ``a float32 tensor (8, 3, 32, 32)``."""
    if torch.is_tensor(batch):
        return f"a {str(batch.dtype).removeprefix('torch.')} tensor {tuple(batch.shape)}"
    if isinstance(batch, dict):
        return "a dict with keys " + ", ".join(map(repr, list(batch)[:6]))
    if isinstance(batch, list | tuple):
        first = describe_batch(batch[0]) if batch else "nothing"
        return f"a {type(batch).__name__} of {len(batch)} starting with {first}"
    return f"type {type(batch).__name__}"


def check_batches(batches: Sequence[Any]) -> None:
    """Every batch has a form :func:`run_batch` can feed (checked before any forward pass)."""
    for index, batch in enumerate(batches, start=1):
        tensor_first = isinstance(batch, list | tuple) and batch and torch.is_tensor(batch[0])
        if not (torch.is_tensor(batch) or isinstance(batch, dict) or tensor_first):
            raise CalibrationError(
                f"calibration batch {index} is {describe_batch(batch)}: give a tensor, an "
                "(input, target) pair or a dict of keyword inputs"
            )
        inputs = batch[0] if tensor_first else batch
        if torch.is_tensor(inputs) and inputs.numel() == 0:
            raise CalibrationError(f"calibration batch {index} is empty: {describe_batch(batch)}")


def as_pair(batch: Any, error: type[MixqError]) -> tuple[Tensor, Tensor]:
    """``batch`` as ``(inputs, targets)``, or ``error`` when it is not such a pair of tensors.

    >>> as_pair((torch.zeros(1), torch.ones(1)), CalibrationError)[1]
    tensor([1.])
    """
    if not (
        isinstance(batch, list | tuple)
        and len(batch) >= 2
        and torch.is_tensor(batch[0])
        and torch.is_tensor(batch[1])
    ):
        raise error(
            "each batch must be an (inputs, targets) pair of tensors, got "
            f"{describe_batch(batch)}: the loss needs the targets"
        )
    return batch[0], batch[1]


def cycle_pairs(
    data: Iterable[Any], error: type[MixqError], *, ran_out_hint: str = ""
) -> Iterator[tuple[Tensor, Tensor]]:
    """The ``(inputs, targets)`` pairs of ``data``, round and round (for a number of steps
    that need not match its length). A batch that is not such a pair of tensors, data with
    no batches, or data that cannot be iterated again raise ``error``; ``ran_out_hint`` is
    added to the last message.

    >>> pairs = cycle_pairs([(torch.zeros(1), torch.ones(1))], CalibrationError)
    >>> [float(next(pairs)[1]) for _ in range(3)]
    [1.0, 1.0, 1.0]
    """
    seen = 0
    while True:
        fresh = 0
        for batch in data:
            fresh += 1
            seen += 1
            yield as_pair(batch, error)
        if fresh == 0:
            if seen == 0:
                raise error("the data yielded no batches")
            raise error(f"the data ran out after {seen} batches{ran_out_hint}")


def run_checked(model: nn.Module, batch: Any, device: torch.device, index: int) -> Any:
    """:func:`run_batch`, with a model's refusal of the batch as a :class:`CalibrationError`."""
    try:
        return run_batch(model, batch, device)
    except MixqError:
        raise
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CalibrationError(
            f"calibration batch {index} ({describe_batch(batch)}) cannot be fed to the model"
            f"{_expectation(model, batch)}: {first_line}"
        ) from exc


def _expectation(model: nn.Module, batch: Any) -> str:
    """What the model's first layer expects, where the batch plainly does not give it."""
    inputs = batch[0] if isinstance(batch, list | tuple) and batch else batch
    if not torch.is_tensor(inputs):
        return ""
    if not inputs.is_floating_point():
        return f" (a {str(inputs.dtype).removeprefix('torch.')} input; float is usual)"
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)), None)
    if isinstance(first, nn.Conv2d) and inputs.dim() >= 3:
        channels = inputs.shape[-3]
        if channels != first.in_channels:
            return f" (its first conv takes {first.in_channels} channels, the batch has {channels})"
    if isinstance(first, nn.Linear) and inputs.shape[-1] != first.in_features:
        features = inputs.shape[-1]
        return f" (its first linear layer takes {first.in_features} features, not {features})"
    return ""
