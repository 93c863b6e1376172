"""Dyadic multipliers and rounding shifts against exact rational arithmetic."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixq.errors import SchemeError
from mixq.integer.dyadic import MULTIPLIER_BITS, Dyadic, dyadic_multiply, rounding_shift


def _round_half_up(value: Fraction) -> int:
    return int((value + Fraction(1, 2)).__floor__())


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-9, max_value=1e6, allow_nan=False))
def test_multiplier_is_31_bits_and_within_half_a_unit_of_the_last_place(value: float) -> None:
    d = Dyadic.from_values(value)
    m, c = int(d.multiplier[0]), int(d.shift[0])
    assert 2**30 <= m <= 2**31
    # Rounding to 31 bits: |m / 2^c - v| <= 2^-(c+1), i.e. a relative error below 2^-31.
    assert abs(Fraction(m, 2**c) - Fraction(value)) <= Fraction(1, 2 ** (c + 1))
    assert float(d.relative_error([value])[0]) <= 2.0**-MULTIPLIER_BITS


def test_zero_and_invalid_values() -> None:
    d = Dyadic.from_values([0.0, 1.0])
    assert d.multiplier.tolist() == [0, 2**30] and d.shift.tolist() == [0, 30]
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(SchemeError, match="finite and non-negative"):
            Dyadic.from_values(bad)
    with pytest.raises(SchemeError, match="too large"):
        Dyadic.from_values(2.0**40)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**40), 2**40), st.integers(0, 20))
def test_rounding_shift_rounds_half_up(x: int, shift: int) -> None:
    got = int(rounding_shift(torch.tensor([x]), shift)[0])
    assert got == _round_half_up(Fraction(x, 2**shift))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(-(2**31) + 1, 2**31 - 1),
    st.floats(min_value=1e-6, max_value=100.0),
    st.integers(-(2**20), 2**20),
)
def test_dyadic_multiply_is_exact_for_its_own_multiplier_and_close_to_the_real(
    x: int, value: float, bias: int
) -> None:
    d = Dyadic.from_values(value)
    m, c = int(d.multiplier[0]), int(d.shift[0])
    offset = bias << c if c < 40 else 0
    got = int(dyadic_multiply(torch.tensor([x]), torch.tensor(m), torch.tensor(c), offset)[0])
    assert got == _round_half_up(Fraction(x * m + offset, 2**c))
    # Against the real product: the rounding (1/2) plus the multiplier's relative error.
    exact = Fraction(x) * Fraction(value) + Fraction(offset, 2**c)
    assert abs(got - exact) <= Fraction(1, 2) + abs(x) * Fraction(value) * Fraction(1, 2**31)


def test_per_channel_shifts_broadcast() -> None:
    d = Dyadic.from_values(np.array([0.5, 0.25, 3.0]))
    m = torch.from_numpy(d.multiplier).view(1, 3)
    c = torch.from_numpy(d.shift).view(1, 3)
    out = dyadic_multiply(torch.tensor([[10, 10, 10], [-3, -3, -3]]), m, c)
    assert out.tolist() == [[5, 3, 30], [-1, -1, -9]]  # -1.5 and -0.75 round up to -1
