"""The clip screen: its float64 error estimates, and the bound on float32 evaluations."""

from __future__ import annotations

import pytest
import torch

from mixq.clip_screen import (
    SortedMagnitudes,
    contenders,
    estimated_errors,
    float32_error_bound,
    widest_step,
)
from mixq.fakequant import quantize_uniform
from mixq.grid_tensors import signed_grid
from mixq.scale_init import _MSE_FRACTIONS, max_abs_scale, row_squared_error
from mixq.schemes import Candidate


def _brute_force_errors(w: torch.Tensor, alphas: torch.Tensor, levels: torch.Tensor):
    """Nearest level of every magnitude, in float64, one clip at a time."""
    mags = w.double().abs()
    out = torch.empty(alphas.shape, dtype=torch.float64)
    for j in range(alphas.shape[1]):
        grid = alphas[:, j : j + 1].double().unsqueeze(2) * levels.double()  # (B, 1, K)
        nearest = (mags.unsqueeze(2) - grid).abs().argmin(dim=2)
        chosen = grid.squeeze(1).gather(1, nearest)
        out[:, j] = (chosen - mags).pow(2).sum(dim=1)
    return out


@pytest.mark.parametrize("name", ["fixed-4", "sp2-4", "pot-4", "fixed-8"])
def test_estimates_equal_a_brute_force_float64_rounding(name: str) -> None:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(10, 257, generator=g).pow(3)
    levels = signed_grid(Candidate.parse(name))[0]
    levels = levels[levels >= 0]
    alphas = max_abs_scale(w).unsqueeze(1) * torch.linspace(0.1, 1.2, 12)
    got = estimated_errors(SortedMagnitudes(w), alphas.double(), levels)
    torch.testing.assert_close(got, _brute_force_errors(w, alphas, levels), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["fixed-2", "fixed-4", "sp2-4", "pot-8", "fixed-8"])
def test_float32_row_errors_lie_within_the_bound(name: str) -> None:
    """What makes the screen exact: every float32 sum the search computes lies within the
    bound of its float64 estimate, and the winner is always a contender."""
    candidate = Candidate.parse(name)
    g = torch.Generator().manual_seed(5)
    w = torch.cat([torch.randn(64, 384, generator=g) * 0.03, torch.randn(32, 384).pow(3)])
    levels = signed_grid(candidate)[0]
    levels = levels[levels >= 0].double()
    peak = max_abs_scale(w)
    alphas = peak.unsqueeze(1) * _MSE_FRACTIONS
    exact = torch.stack([row_squared_error(w, a, candidate) for a in alphas.T], dim=1).double()
    data = SortedMagnitudes(w)
    estimate = estimated_errors(data, alphas.double(), levels)
    bound = float32_error_bound(
        estimate, alphas.double(), data, widest_step(levels), levels.numel()
    )
    assert bool(((exact - estimate).abs() <= bound).all())
    mask = contenders(estimate, bound)
    winners = exact.argmin(dim=1)
    assert bool(mask[torch.arange(w.shape[0]), winners].all())
    assert float(mask.double().mean()) < 0.2  # the screen rules most candidates out


@pytest.mark.parametrize(("bits", "signed"), [(8, False), (4, True), (2, False), (8, True)])
def test_float32_activation_errors_lie_within_the_bound(bits: int, signed: bool) -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(50_000, generator=g).pow(3)
    x = x if signed else x.relu()
    top = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    peak = x.abs().max()
    alphas = peak * torch.linspace(1 / 64, 1, 64)
    exact = torch.tensor(
        [float((quantize_uniform(x, a, bits, signed=signed) - x).pow(2).sum()) for a in alphas],
        dtype=torch.float64,
    )
    data = SortedMagnitudes(x.reshape(1, -1))
    levels = torch.arange(top + 1, dtype=torch.float64) / top
    estimate = estimated_errors(data, alphas.reshape(1, -1).double(), levels)[0]
    bound = float32_error_bound(
        estimate[None], alphas.reshape(1, -1).double(), data, 1 / top, top + 1
    )[0]
    assert bool(((exact - estimate).abs() <= bound).all())


def test_contenders_keep_ties() -> None:
    errors = torch.tensor([[1.0, 1.0, 2.0]], dtype=torch.float64)
    assert contenders(errors, torch.zeros_like(errors)).tolist() == [[True, True, False]]
