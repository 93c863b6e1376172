"""Fake quantisation: pure functions with straight-through rounding and LSQ scale gradients.

``x = clamp(w / alpha, -1, 1)`` is rounded to the nearest grid level; the rounding is
invisible to autograd (straight-through), so ``d out / d w = 1`` inside the clip range and
0 outside, and ``d out / d alpha = round(x) - x`` inside and ``sign(x)`` outside, which is
the learned-step-size (LSQ) gradient for a non-uniform grid.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mixq.grid_tensors import signed_grid
from mixq.grids import positive_levels
from mixq.schemes import Candidate

# Smallest clip level: keeps all-zero rows (pruned channels) from dividing by zero.
MIN_SCALE = 1e-8


def round_to_grid(x: Tensor, candidate: Candidate) -> Tensor:
    """Round values in ``[-1, 1]`` to the nearest level of the candidate's grid.

    Ties go to the level below (``torch.bucketize`` puts a midpoint in the lower bucket).

    >>> round_to_grid(torch.tensor([0.3, -0.56, 0.9]), Candidate.parse("sp2-4"))
    tensor([ 0.2500, -0.5000,  1.0000])
    """
    levels, midpoints = signed_grid(candidate, x.device)
    return levels.to(x.dtype)[torch.bucketize(x, midpoints.to(x.dtype))]


def scale_gradient(tensor: Tensor, factor: float) -> Tensor:
    """The same values, with the gradient multiplied by ``factor`` (LSQ's step-size scaling).

    The value is exactly ``tensor`` (``s - s`` is exactly zero in floating point), so the
    integer engine, which reads the clip level directly, sees the same step.
    """
    scaled = tensor * factor
    return tensor.detach() + (scaled - scaled.detach())


def lsq_gradient_factor(elements_per_scale: int, candidate: Candidate) -> float:
    """LSQ's ``1 / sqrt(N * Q_p)``, so the scale learns at the pace of the weights."""
    return 1.0 / math.sqrt(max(elements_per_scale, 1) * positive_levels(candidate))


def fake_quant_rows(w_rows: Tensor, alpha: Tensor, candidate: Candidate) -> Tensor:
    """Quantise each row ``w_rows[r]`` (shape ``(R, C)``) with clip level ``alpha[r]``.

    >>> w = torch.tensor([[0.9, -0.2, 0.05], [2.0, 1.1, -0.6]])
    >>> fake_quant_rows(w, torch.tensor([1.0, 2.0]), Candidate.parse("fixed-3"))
    tensor([[ 1.0000, -0.3333,  0.0000],
            [ 2.0000,  1.3333, -0.6667]])
    """
    scale = alpha.clamp_min(MIN_SCALE).unsqueeze(1)  # (R, 1)
    x = (w_rows / scale).clamp(-1.0, 1.0)
    q = x + (round_to_grid(x, candidate) - x).detach()
    return q * scale


def quantize_uniform(x: Tensor, alpha: Tensor, bits: int, *, signed: bool) -> Tensor:
    """Per-tensor uniform fake quantisation of activations with clip ``alpha`` (a scalar).

    Unsigned uses ``2^bits - 1`` steps over ``[0, alpha]``; signed uses the symmetric
    ``±(2^(bits-1) - 1)`` steps over ``[-alpha, alpha]``, so zero is exact in both.

    >>> quantize_uniform(torch.tensor([0.1, 0.52, 3.0]), torch.tensor(1.0), 2, signed=False)
    tensor([0.0000, 0.6667, 1.0000])
    """
    top = 2**bits - 1 if not signed else 2 ** (bits - 1) - 1
    step = alpha.clamp_min(MIN_SCALE) / top
    low = 0.0 if not signed else -float(top)
    v = (x / step).clamp(low, float(top))
    q = v + (torch.round(v) - v).detach()
    return q * step
