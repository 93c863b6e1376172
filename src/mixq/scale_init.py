"""Per-row clip levels before training: the row's max |w|, or the level that minimises MSE."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from mixq.clip_screen import (
    SortedMagnitudes,
    contenders,
    estimated_errors,
    float32_error_bound,
    widest_step,
)
from mixq.errors import RecipeError
from mixq.fakequant import MIN_SCALE, fake_quant_rows
from mixq.grid_tensors import signed_grid
from mixq.schemes import Candidate

ScaleMethod = Literal["max", "mse"]

# Clip levels tried by the MSE search, as fractions of the row's max |w|. Below 0.2 no grid
# of 2..8 bits wins on weights of trained networks; 81 steps resolve the optimum to 1%.
_MSE_FRACTIONS = torch.linspace(0.2, 1.0, 81)
_SCREEN_MIN_COLUMNS = 64  # shorter rows: the full search (see _screenable)
_SCREEN_MAX_MAGNITUDE = 1e15  # squared errors stay far from float32 overflow
_SCREEN_ELEMENTS = 1 << 21  # rows x clips x levels per screening chunk (memory)
_PAIR_ELEMENTS = 1 << 21  # weights per chunk of exactly evaluated (row, clip) pairs


def max_abs_scale(w_rows: Tensor) -> Tensor:
    """Each row's largest magnitude, shape ``(R,)``."""
    return w_rows.detach().abs().amax(dim=1).clamp_min(MIN_SCALE)


def row_squared_error(w_rows: Tensor, alpha: Tensor, candidate: Candidate) -> Tensor:
    """``||Q(w_r) - w_r||^2`` for each row, shape ``(R,)``."""
    with torch.no_grad():
        return (fake_quant_rows(w_rows, alpha, candidate) - w_rows).pow(2).sum(dim=1)


def mse_scale(w_rows: Tensor, candidate: Candidate) -> Tensor:
    """For each row, the clip level (a fraction of max |w|) with the least squared error.

    The candidates are the row's max |w| (tried first, so it wins ties) and then the
    fractions of :data:`_MSE_FRACTIONS` in ascending order, the first of equal errors
    winning. Only the candidates that :mod:`mixq.clip_screen` cannot rule out are
    evaluated, with the same float32 operations as a full search, so the result is the
    full search's bit for bit.

    The optimum below is that of ``7 (a - 0.3)^2 + (1 - a)^2``: the outlier is clipped.

    >>> w = torch.tensor([[1.0, 0.3, 0.3, 0.3, 0.3, -0.3, 0.3, 0.3]])
    >>> round(float(mse_scale(w, Candidate.parse("fixed-2"))), 3)
    0.39
    """
    return mse_scales_and_errors(w_rows, (candidate,))[candidate][0]


def mse_scales_and_errors(
    w_rows: Tensor, candidates: Sequence[Candidate]
) -> dict[Candidate, tuple[Tensor, Tensor]]:
    """:func:`mse_scale` for each candidate, with :func:`row_squared_error` at the chosen
    clip levels (the same values bit for bit), sorting the rows once for all candidates."""
    w = w_rows.detach()
    if not _screenable(w):
        chosen = {c: _mse_scale_all(w, c) for c in candidates}
        return {c: (alpha, row_squared_error(w, alpha, c)) for c, alpha in chosen.items()}
    peak = max_abs_scale(w)
    fractions = _MSE_FRACTIONS.to(w.device)[:-1]
    alphas = torch.cat([peak.unsqueeze(1), peak.unsqueeze(1) * fractions], dim=1)
    masks = _contender_pairs(w, alphas, candidates)
    return {c: _least_pairs(w, alphas, masks[c], c) for c in candidates}


def _least_pairs(
    w: Tensor, alphas: Tensor, mask: Tensor, candidate: Candidate
) -> tuple[Tensor, Tensor]:
    """Each row's first clip of least float32 error among the contenders, and that error."""
    pairs = mask.nonzero()
    rows, tried = pairs[:, 0], pairs[:, 1]
    pair_alphas = alphas[rows, tried]
    errors = _pair_errors(w, rows, pair_alphas, candidate)
    # The first of each row's least errors: pairs are in row order, then candidate order.
    count = rows.numel()
    least = torch.full_like(alphas[:, 0], math.inf).scatter_reduce(0, rows, errors, "amin")
    position = torch.arange(count, device=w.device)
    first = torch.full((w.shape[0],), count, dtype=torch.int64, device=w.device).scatter_reduce(
        0, rows, position.masked_fill(errors != least[rows], count), "amin"
    )
    return pair_alphas[first], errors[first]


def _screenable(w: Tensor) -> bool:
    """Shapes and values for which evaluating a subset of (row, clip) pairs gives each row
    the same float32 sums as the full search: PyTorch sums a row of a 2-D tensor of two or
    more rows on its own (one row is a whole-tensor reduction, split across threads), and
    rows shorter than the vector width take other summation paths; values far from
    overflow and underflow keep the screen's error bound valid."""
    rows, columns = w.shape
    if rows < 2 or columns < _SCREEN_MIN_COLUMNS or not w.is_floating_point():
        return False
    if w.dtype != torch.float32 or not bool(torch.isfinite(w).all()):
        return False
    return float(w.abs().max()) <= _SCREEN_MAX_MAGNITUDE


def _contender_pairs(
    w: Tensor, alphas: Tensor, candidates: Sequence[Candidate]
) -> dict[Candidate, Tensor]:
    """For each candidate, the ``(R, clips)`` mask of (row, clip) pairs the screen keeps."""
    grids = {}
    for candidate in candidates:
        levels = signed_grid(candidate, w.device)[0]
        grids[candidate] = levels[levels >= 0].double()
    widest = max(levels.numel() for levels in grids.values())
    chunk = max(1, _SCREEN_ELEMENTS // (alphas.shape[1] * (widest + 1)))
    masks: dict[Candidate, list[Tensor]] = {c: [] for c in candidates}
    for start in range(0, w.shape[0], chunk):
        data = SortedMagnitudes(w[start : start + chunk])
        part = alphas[start : start + chunk].double()
        for candidate, levels in grids.items():
            errors = estimated_errors(data, part, levels)
            bound = float32_error_bound(errors, part, data, widest_step(levels), levels.numel())
            masks[candidate].append(contenders(errors, bound))
    return {c: torch.cat(parts) for c, parts in masks.items()}


def _pair_errors(w: Tensor, rows: Tensor, alphas: Tensor, candidate: Candidate) -> Tensor:
    """``row_squared_error`` of row ``rows[i]`` at clip ``alphas[i]``, in chunks of pairs;
    a chunk of one pair is padded to two, so that its sum is a row sum too."""
    chunk = max(2, _PAIR_ELEMENTS // w.shape[1])
    parts = []
    for start in range(0, rows.numel(), chunk):
        index, alpha = rows[start : start + chunk], alphas[start : start + chunk]
        single = index.numel() == 1
        if single:
            index, alpha = index.repeat(2), alpha.repeat(2)
        error = row_squared_error(w.index_select(0, index), alpha, candidate)
        parts.append(error[:1] if single else error)
    return torch.cat(parts)


def _mse_scale_all(w: Tensor, candidate: Candidate) -> Tensor:
    """The full search: every candidate clip level evaluated on every row."""
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
