"""Screening clip candidates: which candidates of an MSE clip search can still win.

Both MSE searches (per-row weight clips in :mod:`mixq.scale_init`, per-tensor activation
clips in :mod:`mixq.nn.act_quant`) compare float32 sums of squared rounding errors, one per
candidate clip level. Evaluating every candidate costs a full quantisation pass each. Here
each candidate's error is estimated in float64 from the sorted magnitudes and their prefix
sums (a few binary searches per candidate instead of a pass over the data), with a bound on
how far the float32 sum the search computes can lie from it. A candidate whose lowest
possible float32 error exceeds the least highest possible error of any candidate cannot be
the minimum, nor tie with it; the searches evaluate only the others, with the same float32
operations as before, so they choose the same clip bit for bit.

The bound, for a candidate with clip ``a`` over ``n`` values of total magnitude ``s`` and
estimated error ``e``, widened by a safety factor of 8 over the derivation: each value's
float32 rounding error ``d`` is off by at most ``4 eps (a + |d|)`` (the division, the
rounding correction, the product and the difference each round once), so the squares are
off by ``8 eps a |d| + O(eps d^2)``, summing to ``8 eps a sqrt(n e)`` by Cauchy-Schwarz; a
value within rounding of a midpoint may take the other level, which changes its square by
at most ``2 step a * 2 eps (a + |x|)``, summing to ``4 eps step a (n a + s)``; the float32
sum itself is off by at most ``(4 L + 64) eps e`` for PyTorch's cascade summation (four
levels of at most ``L = 2^max(4, ceil(log2 n) / 4)`` additions each, then the vector lanes and
the threads' partial sums combined); and the
float64 estimate, built from prefix sums over the ``K`` levels, by
``4 (n + K) eps64 (q + 2 a s + n a^2)`` with ``q`` the sum of squares.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

_EPS32 = 2.0**-24  # float32 unit roundoff
_EPS64 = 2.0**-53
_SAFETY = 8.0
# Below this clip level float32 values can be subnormal and the relative bounds above fail:
# such rows or tensors are searched in full.
_SMALLEST_SCREENED = 1e-6


class SortedMagnitudes:
    """Ascending magnitudes of ``B`` equally long vectors, shape ``(B, N)``, in float64, with
    prefix sums of the magnitudes and of their squares (each ``(B, N + 1)``, leading 0).

    >>> s = SortedMagnitudes(torch.tensor([[0.5, -1.0, 0.25]]))
    >>> s.values.tolist(), s.sum1[:, -1].tolist()
    ([[0.25, 0.5, 1.0]], [1.75])
    """

    def __init__(self, values: Tensor) -> None:
        # Sorted before widening: the same order, at half the cost of sorting float64.
        self.values = _sorted_rows(values.detach().abs()).double()
        zeros = torch.zeros(values.shape[0], 1, dtype=torch.float64, device=values.device)
        self.sum1 = torch.cat([zeros, self.values.cumsum(dim=1)], dim=1)
        self.sum2 = torch.cat([zeros, self.values.pow(2).cumsum(dim=1)], dim=1)

    @property
    def count(self) -> int:
        return self.values.shape[1]


def _sorted_rows(magnitudes: Tensor) -> Tensor:
    """Each row ascending. On the CPU NumPy's sort (vectorised, x86-simd-sort) is several
    times faster than PyTorch's on long rows; sorted values are the same either way (no
    negative zero after ``abs``, NaN last in both)."""
    if magnitudes.device.type == "cpu" and magnitudes.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.sort(magnitudes.numpy(), axis=1))
    return magnitudes.sort(dim=1).values


def estimated_errors(data: SortedMagnitudes, alphas: Tensor, levels: Tensor) -> Tensor:
    """``sum (Q(x) - x)^2`` per vector and clip level, to float64 precision, shape ``(B, F)``.

    ``alphas`` is ``(B, F)``; ``levels`` are the grid's magnitudes as fractions of the clip
    level, ascending from 0 to 1; magnitudes above the clip level round to it. Values within
    rounding of a midpoint may go either way (their error is the same either way).

    >>> data = SortedMagnitudes(torch.tensor([[0.1, 0.4, 2.0]]))
    >>> errors = estimated_errors(data, torch.tensor([[1.0]]), torch.tensor([0.0, 0.5, 1.0]))
    >>> round(float(errors), 6)  # 0.1^2 + 0.1^2 + 1^2
    1.02
    """
    batch, count = data.values.shape
    levels = levels.double()
    midpoints = (levels[1:] + levels[:-1]) / 2
    alphas = alphas.double()
    candidates = alphas.shape[1]
    # Inner bucket edges: the first value at or above each midpoint times the clip.
    edges = torch.searchsorted(
        data.values, (alphas.unsqueeze(2) * midpoints).reshape(batch, -1)
    ).reshape(batch, candidates, -1)
    below = data.sum1.gather(1, edges.reshape(batch, -1)).reshape(edges.shape)
    # sum (a - alpha m_k)^2 over buckets, by parts: sum a^2 - 2 alpha sum_k m_k S1_k +
    # alpha^2 sum_k m_k^2 n_k, where each inner edge contributes (m_{k-1} - m_k) times the
    # prefix sums below it and the top level the totals.
    step_down = levels[:-1] - levels[1:]
    step_down_sq = levels[:-1].pow(2) - levels[1:].pow(2)
    top, top_sq = levels[-1], levels[-1].pow(2)
    linear = below @ step_down + data.sum1[:, -1:] * top
    quadratic = edges.double() @ step_down_sq + count * top_sq
    errors = data.sum2[:, -1:] - 2 * alphas * linear + alphas.pow(2) * quadratic
    return errors.clamp_min(0.0)


def float32_error_bound(
    errors: Tensor, alphas: Tensor, data: SortedMagnitudes, step: float, levels: int
) -> Tensor:
    """How far a float32 evaluation of each error in ``errors`` (``(B, F)``) can lie from it
    (see the module docstring); ``step`` is the widest gap between neighbouring levels as a
    fraction of the clip level, ``levels`` how many magnitudes the grid has (each adds a
    rounding to the estimate). Clip levels below ``_SMALLEST_SCREENED`` get an infinite
    bound: every candidate stays in."""
    count = float(data.count)
    total = data.sum1[:, -1:]
    alphas = alphas.double()
    float32_part = _EPS32 * (
        8 * alphas * (count * errors).sqrt()
        + 4 * step * alphas * (count * alphas + total)
        + (4 * _cascade_level(count) + 64) * errors
    )
    squares = data.sum2[:, -1:] + 2 * alphas * total + count * alphas.pow(2)
    bound = _SAFETY * (float32_part + 4 * (count + levels) * _EPS64 * squares)
    return bound.masked_fill(alphas < _SMALLEST_SCREENED, math.inf)


def contenders(errors: Tensor, bound: Tensor, *, divided: bool = False) -> Tensor:
    """Candidates (``(B, F)`` mask) whose float32 error can be the least or tie with it.
    ``divided``: the search compares the errors after a float32 division (a mean), whose
    rounding can make two different sums equal, so the margin widens by that rounding.

    >>> contenders(torch.tensor([[3.0, 1.0, 1.5]]), torch.tensor([[0.1, 0.1, 0.5]])).tolist()
    [[False, True, True]]
    """
    slack = 4 * _EPS32 if divided else 0.0
    best_upper = ((errors + bound) * (1 + slack)).amin(dim=1, keepdim=True)
    return (errors - bound) * (1 - slack) <= best_upper


def _cascade_level(count: float) -> int:
    return 2 ** max(4, math.ceil(math.log2(max(count, 2.0))) // 4)


def widest_step(levels: Tensor) -> float:
    """The widest gap between neighbouring levels (ascending magnitudes)."""
    return float((levels[1:] - levels[:-1]).max()) if levels.numel() > 1 else 1.0
