"""Row scorers: how much each row of a layer needs the higher precision (pluggable).

A scorer maps ``(layer name, weight rows (R, C), ratio)`` to ``R`` scores; the rows with
the highest scores take the candidates with the most bits. The Hessian scorer (per-row
trace times perturbation) plugs in here through the same signature.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from mixq.errors import RecipeError
from mixq.ratio import Ratio
from mixq.recipe import BUILTIN_ROW_SCORERS
from mixq.scale_init import mse_scales_and_errors

RowScorer = Callable[[str, Tensor, Ratio], np.ndarray]


def magnitude_scorer(name: str, w_rows: Tensor, ratio: Ratio) -> np.ndarray:
    """``||w_r||^2``: rows that carry more energy matter more."""
    del name, ratio
    return w_rows.detach().pow(2).sum(dim=1).double().cpu().numpy()


def perturbation_scorer(name: str, w_rows: Tensor, ratio: Ratio) -> np.ndarray:
    """``||Q(w_r) - w_r||^2`` under the ratio's lowest-bit candidate: the error a row would
    suffer if it were not promoted (HAWQ's perturbation, without the Hessian factor).
    Among equal-bit candidates the one with the least total error stands for the group."""
    del name
    w = w_rows.detach()
    lowest = min(c.bits for c in ratio.candidates)
    group = [c for c in ratio.candidates if c.bits == lowest]
    # The errors at the MSE clips, as row_squared_error gives them, with one sort of the rows.
    errors = [error for _, error in mse_scales_and_errors(w, group).values()]
    best = min(errors, key=lambda e: float(e.sum()))
    return best.double().cpu().numpy()


SCORERS: dict[str, RowScorer] = {
    "magnitude": magnitude_scorer,
    "perturbation": perturbation_scorer,
}


def register_row_scorer(name: str, scorer: RowScorer, *, replace: bool = False) -> None:
    """Make ``scorer`` available to recipes as ``row_scorer: <name>``.

    ``scorer(layer_name, w_rows, ratio)`` returns one score per row (see above). A
    built-in name, or a name already registered, is refused unless ``replace=True``
    (built-ins are never replaced). The registration lasts for the process: register
    before loading a recipe that names the scorer.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", name):
        raise RecipeError(
            f"a row scorer name must be a non-empty word (letters, digits, _ . : -), got {name!r}"
        )
    if not callable(scorer):
        raise RecipeError(f"row scorer {name!r} must be callable, got {type(scorer).__name__}")
    if name in BUILTIN_ROW_SCORERS or (name in SCORERS and not replace):
        raise RecipeError(f"row scorer {name!r} is already registered")
    SCORERS[name] = scorer


def get_scorer(scorer: str | RowScorer) -> RowScorer:
    if callable(scorer):
        return scorer
    if scorer not in SCORERS:
        raise RecipeError(f"unknown row scorer {scorer!r}; known: {', '.join(SCORERS)}")
    return SCORERS[scorer]


def row_shape(w_rows: Tensor) -> np.ndarray:
    """``var(w_r) / max(w_r^2)``: low for bell-shaped rows, about 1/3 for flat ones."""
    w = w_rows.detach().double()
    peak = w.pow(2).amax(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    return (w.var(dim=1, unbiased=False) / peak).cpu().numpy()
