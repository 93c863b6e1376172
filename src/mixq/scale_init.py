"""Per-row clip levels before training: the row's max |w|, or the level that minimises MSE."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mixq.errors import RecipeError
from mixq.fakequant import MIN_SCALE, fake_quant_rows
from mixq.schemes import Candidate

ScaleMethod = Literal["max", "mse"]

# Clip levels tried by the MSE search, as fractions of the row's max |w|. Below 0.2 no grid
# of 2..8 bits wins on weights of trained networks; 81 steps resolve the optimum to 1%.
_MSE_FRACTIONS = torch.linspace(0.2, 1.0, 81)


def max_abs_scale(w_rows: Tensor) -> Tensor:
    """Each row's largest magnitude, shape ``(R,)``."""
    return w_rows.detach().abs().amax(dim=1).clamp_min(MIN_SCALE)


def row_squared_error(w_rows: Tensor, alpha: Tensor, candidate: Candidate) -> Tensor:
    """``||Q(w_r) - w_r||^2`` for each row, shape ``(R,)``."""
    with torch.no_grad():
        return (fake_quant_rows(w_rows, alpha, candidate) - w_rows).pow(2).sum(dim=1)


def mse_scale(w_rows: Tensor, candidate: Candidate) -> Tensor:
    """For each row, the clip level (a fraction of max |w|) with the least squared error.

    The optimum below is that of ``7 (a - 0.3)^2 + (1 - a)^2``: the outlier is clipped.

    >>> w = torch.tensor([[1.0, 0.3, 0.3, 0.3, 0.3, -0.3, 0.3, 0.3]])
    >>> round(float(mse_scale(w, Candidate.parse("fixed-2"))), 3)
    0.39
    """
    w = w_rows.detach()
    peak = max_abs_scale(w)
    best_alpha = peak.clone()
    best_error = row_squared_error(w, peak, candidate)
    for fraction in _MSE_FRACTIONS[:-1]:
        alpha = peak * fraction
        error = row_squared_error(w, alpha, candidate)
        better = error < best_error
        best_alpha = torch.where(better, alpha, best_alpha)
        best_error = torch.where(better, error, best_error)
    return best_alpha


def init_scale(w_rows: Tensor, candidate: Candidate, method: ScaleMethod = "mse") -> Tensor:
    """Clip levels for rows that all use ``candidate``."""
    if method == "max":
        return max_abs_scale(w_rows)
    if method == "mse":
        return mse_scale(w_rows, candidate)
    raise RecipeError(f"unknown scale initialisation {method!r}; use 'max' or 'mse'")
