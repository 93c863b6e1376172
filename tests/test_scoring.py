"""Row scorers and the row-shape statistic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixq.errors import RecipeError
from mixq.ratio import Ratio
from mixq.scale_init import mse_scale, row_squared_error
from mixq.schemes import Candidate
from mixq.scoring import get_scorer, magnitude_scorer, perturbation_scorer, row_shape

RMSMP = Ratio.parse("sp2-4:0.6,fixed-4:0.35,fixed-8:0.05")


def test_magnitude_scorer() -> None:
    w = torch.tensor([[1.0, -2.0], [0.5, 0.5], [0.0, 3.0]])
    scores = magnitude_scorer("layer", w, RMSMP)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, [5.0, 0.5, 9.0])


def test_perturbation_scorer_uses_the_best_lowest_bit_candidate() -> None:
    w = torch.randn(8, 27, generator=torch.Generator().manual_seed(0))
    scores = perturbation_scorer("layer", w, RMSMP)
    per_candidate = {
        c: row_squared_error(w, mse_scale(w, c), c).double().numpy()
        for c in (Candidate.parse("sp2-4"), Candidate.parse("fixed-4"))
    }
    best = min(per_candidate.values(), key=lambda e: e.sum())
    np.testing.assert_allclose(scores, best, rtol=1e-6)
    # The 8-bit candidate is never the reference: its errors are far smaller.
    eight = Candidate.parse("fixed-8")
    assert scores.sum() > 10 * float(row_squared_error(w, mse_scale(w, eight), eight).sum())


def test_row_shape() -> None:
    flat = torch.linspace(-1, 1, 2001)
    bell = torch.randn(2001, generator=torch.Generator().manual_seed(0))
    w = torch.stack([flat, bell, 5 * bell, torch.zeros(2001), torch.full((2001,), 0.7)])
    shape = row_shape(w)
    assert shape[0] == pytest.approx(1 / 3, rel=1e-2)  # var of U(-1, 1) over its peak^2
    assert shape[1] < 0.15  # a Gaussian's peak is several standard deviations out
    assert shape[2] == pytest.approx(shape[1])  # scale-free
    assert shape[3] == 0.0 and shape[4] == pytest.approx(0.0, abs=1e-12)


def test_get_scorer() -> None:
    assert get_scorer("magnitude") is magnitude_scorer
    assert get_scorer("perturbation") is perturbation_scorer

    def custom(name: str, w: torch.Tensor, ratio: Ratio) -> np.ndarray:
        return np.zeros(w.shape[0])

    assert get_scorer(custom) is custom
    with pytest.raises(RecipeError, match="unknown row scorer 'hessian'; known: magnitude"):
        get_scorer("hessian")
