"""Hypothesis strategies shared by the tests (a helper module, not a test file)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mixq.schemes import BITS_RANGE, Candidate, Scheme

ALL_CANDIDATES = [
    Candidate(scheme, bits)
    for scheme in Scheme
    for bits in range(BITS_RANGE[scheme][0], BITS_RANGE[scheme][1] + 1)
]

candidates = st.sampled_from(ALL_CANDIDATES)


@st.composite
def weights_and_scales(
    draw: st.DrawFn, max_rows: int = 5, max_cols: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(rows, cols)`` float32 weight and one positive clip level per row."""
    rows = draw(st.integers(1, max_rows))
    cols = draw(st.integers(1, max_cols))
    w = draw(arrays(np.float32, (rows, cols), elements=st.floats(-4, 4, width=32)))
    alpha = draw(arrays(np.float32, (rows,), elements=st.floats(0.0625, 4, width=32)))
    return torch.from_numpy(w), torch.from_numpy(alpha)


def signed_levels(candidate: Candidate) -> torch.Tensor:
    """All levels of a candidate in float64, computed from the exact fractions."""
    from mixq.grids import exact_magnitudes

    mags = [float(m) for m in exact_magnitudes(candidate)]
    return torch.tensor(sorted({-m for m in mags} | set(mags)), dtype=torch.float64)
