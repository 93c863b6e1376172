"""Level grids of Fixed, PoT and SP2, against values computed by hand."""

from __future__ import annotations

import itertools
from fractions import Fraction
from math import comb

import pytest
import torch
from _strategies import ALL_CANDIDATES

from mixq.grid_tensors import signed_grid
from mixq.grids import (
    exact_magnitudes,
    integer_magnitudes,
    magnitudes,
    positive_levels,
    sp2_term_bits,
)
from mixq.schemes import Candidate, Scheme


def _c(text: str) -> Candidate:
    return Candidate.parse(text)


# -- hand-computed grids -------------------------------------------------------------------

HAND_GRIDS = {
    # SP2-3: m1 = m2 = 1, q1, q2 in {0, 1/2}: sums {0, 1/2, 1}.
    "sp2-3": "0 1/2 1",
    # SP2-4 (SPEC): m1 = 2, m2 = 1: q1 in {0, 1/2, 1/4, 1/8}, q2 in {0, 1/2}.
    "sp2-4": "0 1/8 1/4 1/2 5/8 3/4 1",
    # SP2-5: m1 = m2 = 2, q1, q2 in {0, 1/2, 1/4, 1/8}: every i/8 but 7/8 (three bits set).
    "sp2-5": "0 1/8 1/4 3/8 1/2 5/8 3/4 1",
    "fixed-2": "0 1",
    "fixed-3": "0 1/3 2/3 1",
    "fixed-4": "0 1/7 2/7 3/7 4/7 5/7 6/7 1",
    "pot-2": "0 1",
    "pot-3": "0 1/4 1/2 1",
    "pot-4": "0 1/64 1/32 1/16 1/8 1/4 1/2 1",
}


@pytest.mark.parametrize("name", sorted(HAND_GRIDS))
def test_hand_computed_grids(name: str) -> None:
    expected = [Fraction(m) for m in HAND_GRIDS[name].split()]
    assert list(exact_magnitudes(_c(name))) == expected
    assert magnitudes(_c(name)) == tuple(float(m) for m in expected)


@pytest.mark.parametrize("bits", range(2, 9))
def test_fixed_grid_formula(bits: int) -> None:
    top = 2 ** (bits - 1) - 1
    assert list(exact_magnitudes(Candidate(Scheme.FIXED, bits))) == [
        Fraction(i, top) for i in range(top + 1)
    ]


@pytest.mark.parametrize("bits", range(2, 9))
def test_pot_grid_formula(bits: int) -> None:
    expected = sorted({Fraction(0)} | {Fraction(1, 2**j) for j in range(2 ** (bits - 1) - 1)})
    assert list(exact_magnitudes(Candidate(Scheme.POT, bits))) == expected


# Magnitudes of SP2-k: with nA = 2^m1 - 1 powers in the first term and nB = 2^m2 - 1 in the
# second, the distinct sums are 0, the nA single powers, 1 = 1/2 + 1/2, and the sums of two
# different powers with at least one exponent <= nB: C(nA, 2) - C(nA - nB, 2).
SP2_MAGNITUDE_COUNTS = {3: 3, 4: 7, 5: 8, 6: 24, 7: 30, 8: 94}


@pytest.mark.parametrize(("bits", "count"), sorted(SP2_MAGNITUDE_COUNTS.items()))
def test_sp2_magnitude_counts(bits: int, count: int) -> None:
    m1, m2 = sp2_term_bits(bits)
    n_a, n_b = 2**m1 - 1, 2**m2 - 1
    assert 2 + n_a + comb(n_a, 2) - comb(n_a - n_b, 2) == count
    assert len(exact_magnitudes(Candidate(Scheme.SP2, bits))) == count
    assert positive_levels(Candidate(Scheme.SP2, bits)) == count - 1


@pytest.mark.parametrize(
    ("bits", "terms"),
    [(3, (1, 1)), (4, (2, 1)), (5, (2, 2)), (6, (3, 2)), (7, (3, 3)), (8, (4, 3))],
)
def test_sp2_term_bits(bits: int, terms: tuple[int, int]) -> None:
    assert sp2_term_bits(bits) == terms


@pytest.mark.parametrize("scheme", [Scheme.FIXED, Scheme.POT])
@pytest.mark.parametrize("bits", range(2, 9))
def test_fixed_and_pot_level_counts(scheme: Scheme, bits: int) -> None:
    candidate = Candidate(scheme, bits)
    assert len(exact_magnitudes(candidate)) == 2 ** (bits - 1)
    assert positive_levels(candidate) == 2 ** (bits - 1) - 1
    levels, midpoints = signed_grid(candidate)
    assert levels.numel() == 2**bits - 1  # every code but "minus zero"
    assert midpoints.numel() == levels.numel() - 1


# -- integer form ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fixed-2", ((0, 1), 1)),
        ("fixed-3", ((0, 1, 2, 3), 3)),
        ("fixed-8", (tuple(range(128)), 127)),
        ("pot-2", ((0, 1), 1)),
        ("pot-3", ((0, 1, 2, 4), 4)),
        ("pot-4", ((0, 1, 2, 4, 8, 16, 32, 64), 64)),
        ("sp2-3", ((0, 1, 2), 2)),
        ("sp2-4", ((0, 1, 2, 4, 5, 6, 8), 8)),
        ("sp2-5", ((0, 1, 2, 3, 4, 5, 6, 8), 8)),
    ],
)
def test_integer_magnitudes_by_hand(name: str, expected: tuple[tuple[int, ...], int]) -> None:
    assert integer_magnitudes(_c(name)) == expected


@pytest.mark.parametrize("candidate", ALL_CANDIDATES, ids=str)
def test_integer_magnitudes_are_exact(candidate: Candidate) -> None:
    integers, denominator = integer_magnitudes(candidate)
    exact = exact_magnitudes(candidate)
    assert [Fraction(i, denominator) for i in integers] == list(exact)
    assert integers[-1] == denominator  # the largest magnitude is 1
    if candidate.scheme is Scheme.FIXED:
        assert denominator == 2 ** (candidate.bits - 1) - 1
    else:  # products by PoT and SP2 magnitudes are shifts
        assert denominator & (denominator - 1) == 0


@pytest.mark.parametrize("candidate", ALL_CANDIDATES, ids=str)
def test_grids_are_ascending_from_zero_to_one(candidate: Candidate) -> None:
    exact = exact_magnitudes(candidate)
    assert exact[0] == 0 and exact[-1] == 1
    assert all(a < b for a, b in itertools.pairwise(exact))


@pytest.mark.parametrize("bits", range(3, 9))
def test_sp2_levels_are_sums_of_at_most_two_powers_of_two(bits: int) -> None:
    candidate = Candidate(Scheme.SP2, bits)
    integers, denominator = integer_magnitudes(candidate)
    assert denominator & (denominator - 1) == 0
    assert all(bin(i).count("1") <= 2 for i in integers)
    # And SP2 never loses a level of PoT with as many power terms as its first term.
    m1, _ = sp2_term_bits(bits)
    assert {Fraction(1, 2**j) for j in range(1, 2**m1)} <= set(exact_magnitudes(candidate))


@pytest.mark.parametrize("candidate", ALL_CANDIDATES, ids=str)
def test_signed_grid_is_symmetric_with_zero_once(candidate: Candidate) -> None:
    levels, midpoints = signed_grid(candidate)
    mags = torch.tensor(magnitudes(candidate), dtype=torch.float32)
    assert levels.dtype == torch.float32
    assert torch.equal(levels, -levels.flip(0))
    assert torch.equal(levels[levels.numel() // 2 :], mags)
    assert int((levels == 0).sum()) == 1
    assert torch.all(levels[1:] > levels[:-1])
    assert torch.equal(midpoints, (levels[1:] + levels[:-1]) / 2)


def test_grids_still_resolves_signed_grid_for_torch_callers() -> None:
    import mixq.grids

    assert mixq.grids.signed_grid is signed_grid
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = mixq.grids.nonexistent  # type: ignore[attr-defined]
