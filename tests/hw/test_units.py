"""MAC unit definitions agree with mixq's grids: every code, every magnitude, the widths."""

from __future__ import annotations

import pytest

from mixq.errors import HardwareCostError
from mixq.grids import integer_magnitudes, sp2_term_bits
from mixq.hw.units import ACC_GUARD_BITS, MacUnit, default_units, sp2_term_integers
from mixq.schemes import Candidate, Scheme


@pytest.mark.parametrize("unit", default_units(), ids=lambda u: u.key)
def test_codes_cover_exactly_the_grid(unit: MacUnit) -> None:
    mags, _ = integer_magnitudes(unit.candidate)
    codes = unit.weight_codes()
    assert {abs(value) for _, value in codes} == set(mags)
    assert {value for _, value in codes} == {s * m for m in mags for s in (1, -1)}
    assert all(0 <= code < 2**unit.weight_bits for code, _ in codes)
    assert len({code for code, _ in codes}) == len(codes)  # one value per code


def test_fixed_codes_are_twos_complement_and_pot_codes_are_sign_and_index() -> None:
    fixed = dict(MacUnit(Candidate.parse("fixed-4"), 4).weight_codes())
    assert (fixed[0b0111], fixed[0b1001], fixed[0b1111]) == (7, -7, -1)
    assert 0b1000 not in fixed  # -8 is not on the symmetric grid
    pot = dict(MacUnit(Candidate.parse("pot-4"), 4).weight_codes())
    assert (pot[0b0001], pot[0b0111], pot[0b1011]) == (1, 64, -4)


def test_sp2_terms_are_spec_section_1() -> None:
    for bits in range(3, 9):
        candidate = Candidate(Scheme.SP2, bits)
        first, second = sp2_term_integers(candidate)
        m1, m2 = sp2_term_bits(bits)
        assert (len(first), len(second)) == (2**m1, 2**m2)
        mags, denominator = integer_magnitudes(candidate)
        assert denominator == 2 ** (2**m1 - 1)
        assert {q1 + q2 for q1 in first for q2 in second} == set(mags)
    with pytest.raises(HardwareCostError, match="not an SP2"):
        sp2_term_integers(Candidate.parse("pot-4"))


def test_accumulator_width_bounds_the_longest_row() -> None:
    unit = MacUnit(Candidate.parse("fixed-8"), 8)
    largest = 255 * 127
    assert unit.product_bits == largest.bit_length() + 1 == 16
    assert unit.acc_bits == 16 + ACC_GUARD_BITS
    assert 4608 * largest < 2 ** (unit.acc_bits - 1)  # ResNet-18's longest row fits
    assert unit.parameters() == {"A_BITS": 8, "W_BITS": 8, "ACC_BITS": 29}
    assert MacUnit.parse("sp2-5/a4").parameters()["M2"] == 2


@pytest.mark.parametrize("key", ["sp2-4", "sp2-4/8", "sp2-4/ax", "sp2-9/a4"])
def test_bad_unit_names(key: str) -> None:
    with pytest.raises((HardwareCostError, ValueError)):
        MacUnit.parse(key)
