"""The non-finite guard of training: one check per step, one check before every save."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mixq.checkpoint import require_finite_state
from mixq.errors import TrainingDivergedError


def check_finite_step(loss: Tensor, params: Sequence[Tensor], epoch: int, step: int) -> float:
    """The step's loss as a float, or :class:`TrainingDivergedError` if the loss or any
    parameter after the update is NaN or Inf (``epoch`` and ``step`` are 1-based).

    One host sync per step: the loss and one sum per parameter are reduced together (a sum
    that overflows means weights near 1e38, diverged as surely as an Inf).
    """
    with torch.no_grad():
        sums = [p.detach().float().sum() for p in params]
        values = torch.stack([loss.detach().float().reshape(()), *sums]).cpu()
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return float(values[0])
    where = f"epoch {epoch}, step {step}"
    if not bool(finite[0]):
        raise TrainingDivergedError(
            f"training diverged at {where}: the loss is {float(values[0])} "
            "(lower the learning rate, or set grad_clip); nothing was saved from this step",
            epoch,
            step,
        )
    raise TrainingDivergedError(
        f"training diverged at {where}: the update made weights non-finite "
        "(lower the learning rate, or set grad_clip); nothing was saved from this step",
        epoch,
        step,
    )


def require_finite_model(model: nn.Module, destination: str) -> None:
    """Refuse to save a model with a NaN or Inf in any floating-point tensor of its state
    (the same check :func:`mixq.save_quantized` makes)."""
    require_finite_state(model.state_dict(), destination)
