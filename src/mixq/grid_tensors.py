"""The level grids of :mod:`mixq.grids` as tensors, for the fake quantisers."""

from __future__ import annotations

from functools import cache

import torch

from mixq.grids import magnitudes
from mixq.schemes import Candidate


@cache
def _signed_grid_cpu(candidate: Candidate) -> tuple[torch.Tensor, torch.Tensor]:
    mags = torch.tensor(magnitudes(candidate), dtype=torch.float32)
    levels = torch.cat([-mags.flip(0)[:-1], mags])  # symmetric, zero once
    midpoints = (levels[1:] + levels[:-1]) / 2
    return levels, midpoints


def signed_grid(
    candidate: Candidate, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric levels in ``[-1, 1]`` (ascending) and the midpoints between neighbours.

    >>> levels, midpoints = signed_grid(Candidate.parse("fixed-3"))
    >>> [round(v, 3) for v in levels.tolist()]
    [-1.0, -0.667, -0.333, 0.0, 0.333, 0.667, 1.0]
    >>> len(midpoints) == len(levels) - 1
    True
    """
    levels, midpoints = _signed_grid_cpu(candidate)
    if device is not None and device.type != "cpu":
        return levels.to(device), midpoints.to(device)
    return levels, midpoints
