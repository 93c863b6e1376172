"""Rounding real bit widths never exceeds the budget and stays near what the search wanted."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mixq.dfq import round_bits
from mixq.dfq.rounding import RELATIVE_SLACK
from mixq.errors import AllocationError, InfeasibleBudgetError


@settings(max_examples=200, deadline=None)
@given(
    bits=st.lists(st.floats(1.0, 9.0), min_size=1, max_size=30),
    cost_seed=st.integers(0, 2**16),
    share=st.floats(0.0, 1.2),
)
# 160 + 0.2 * 480 is 255.99999999999997 in floating point: the whole-bit cost 256 fits
@example(bits=[3.0, 5.0, 1.0], cost_seed=12394, share=0.19999999999999996)
def test_rounded_bits_fit_the_budget_and_stay_in_range(bits, cost_seed, share) -> None:
    bits = np.array(bits)
    costs = np.random.default_rng(cost_seed).integers(1, 50, size=bits.size).astype(float)
    smallest, largest = 2 * costs.sum(), 8 * costs.sum()
    budget = smallest + share * (largest - smallest)
    rounded = round_bits(bits, costs, budget, min_bits=2, max_bits=8)
    limit = budget * (1 + RELATIVE_SLACK)  # a budget computed in floating point
    assert costs @ rounded <= limit
    assert rounded.min() >= 2 and rounded.max() <= 8
    assert np.all(rounded <= np.ceil(np.clip(bits, 2, 8)))
    wanted = np.clip(bits, 2, 8)
    if costs @ np.floor(wanted) <= budget:
        # Nothing is taken below floor(b) when floor(b) fits, and no unit that wanted more
        # could still take its bit.
        assert np.all(rounded >= np.floor(wanted))
        spare = limit - costs @ rounded
        room = (rounded < np.ceil(wanted)) & (costs <= spare)
        assert not room.any()


def test_the_least_wanted_units_give_bits_first() -> None:
    rounded = round_bits(np.array([6.0, 3.0, 5.0]), np.ones(3), 12, min_bits=2, max_bits=8)
    assert rounded.tolist() == [6, 2, 4]


def test_a_budget_below_the_minimum_raises_with_the_minimum() -> None:
    with pytest.raises(InfeasibleBudgetError, match="below 60") as caught:
        round_bits(np.array([4.0, 4.0]), np.array([10.0, 20.0]), 50, min_bits=2, max_bits=8)
    assert caught.value.minimums == {"budget": 60.0}
    with pytest.raises(AllocationError, match="matching vectors"):
        round_bits(np.array([4.0]), np.array([1.0, 2.0]), 50, min_bits=2, max_bits=8)
