"""The clip screen's CPU sort (NumPy's) gives PyTorch's sorted values bit for bit."""

from __future__ import annotations

import pytest
import torch

from mixq.clip_screen import SortedMagnitudes, _sorted_rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sorted_rows_are_torchs_sorted_values(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(7, 4099, generator=generator).to(dtype)
    values[0, :50] = 0.0
    values[1, :50] = -0.0
    values[2, 10] = torch.inf
    values[3, :9] = values[3, 9]  # ties
    values[4, 5] = torch.nan
    magnitudes = values.abs()
    got = _sorted_rows(magnitudes)
    expected = magnitudes.sort(dim=1).values
    bits = torch.int32 if dtype == torch.float32 else torch.int64
    assert got.dtype == dtype and torch.equal(got.view(bits), expected.view(bits))


def test_sorted_magnitudes_of_a_single_long_row() -> None:
    values = torch.randn(1, 1 << 16, generator=torch.Generator().manual_seed(1))
    sorted_magnitudes = SortedMagnitudes(values)
    assert torch.equal(sorted_magnitudes.values, values.abs().sort(dim=1).values.double())
    assert float(sorted_magnitudes.sum1[0, -1]) == pytest.approx(float(values.abs().sum()))
