"""Rounding real-valued bit widths to integers under a linear budget (torch-free).

Greedy, and never over the budget: start from ``floor(b)``; while that costs too much, take
a bit from the unit the search valued least (lowest ``b``); then give a bit back to the units
closest to their ``ceil(b)`` for as long as the budget allows.
"""

from __future__ import annotations

import numpy as np

from mixq.errors import AllocationError, InfeasibleBudgetError

# Budgets are often float sums of integer costs (255.99999999999997 for 256): a cost
# within this relative margin of the budget meets it.
RELATIVE_SLACK = 1e-12


def round_bits(
    bits: np.ndarray, costs: np.ndarray, budget: float, *, min_bits: int, max_bits: int
) -> np.ndarray:
    """Integer bits ``r`` with ``costs @ r <= budget`` (to ``RELATIVE_SLACK``) and
    ``min_bits <= r <= ceil(bits)``.

    ``costs[u]`` is what one bit of unit ``u`` costs (its weights for size, its MACs times
    activation bits for BOPs).

    >>> round_bits(np.array([4.6, 3.2, 7.9]), np.array([10, 10, 10]), 160, min_bits=2, max_bits=8)
    array([5, 3, 8])
    >>> round_bits(np.array([4.6, 3.2, 7.9]), np.array([10, 10, 10]), 140, min_bits=2, max_bits=8)
    array([4, 3, 7])
    """
    bits = np.asarray(bits, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    if bits.shape != costs.shape or bits.ndim != 1:
        raise AllocationError(f"bits {bits.shape} and costs {costs.shape} must be matching vectors")
    if not (np.all(np.isfinite(bits)) and np.all(np.isfinite(costs)) and np.all(costs >= 0)):
        raise AllocationError("bits and costs must be finite, costs >= 0")
    smallest = float(costs.sum() * min_bits)
    if smallest > budget * (1 + RELATIVE_SLACK):
        raise InfeasibleBudgetError(
            f"budget {budget:.6g} is below {smallest:.6g}, the cost of every unit at "
            f"{min_bits} bits",
            {"budget": smallest},
        )
    wanted = np.clip(bits, min_bits, max_bits)
    rounded = np.floor(wanted).astype(np.int64)
    limit = budget * (1 + RELATIVE_SLACK)
    spend = float(costs @ rounded)
    least_wanted_first = np.argsort(wanted, kind="stable")
    while spend > limit:
        for unit in least_wanted_first:
            if spend <= limit:
                break
            if rounded[unit] > min_bits and costs[unit] > 0:
                rounded[unit] -= 1
                spend -= costs[unit]
    fraction = wanted - np.floor(wanted)
    for unit in np.argsort(-fraction, kind="stable"):
        wants_more = fraction[unit] > 0 and rounded[unit] < np.ceil(wanted[unit])
        if wants_more and spend + costs[unit] <= limit:
            rounded[unit] += 1
            spend += costs[unit]
    return rounded
