"""Ratios of candidates and their per-layer row counts (largest remainder)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from _strategies import ALL_CANDIDATES
from hypothesis import given, settings
from hypothesis import strategies as st

from mixq.allocation.rows import RowStats, assign_rows
from mixq.ratio import Ratio
from mixq.schemes import Candidate

C = Candidate.parse


def test_parse_forms_agree() -> None:
    from_text = Ratio.parse("sp2-4:0.6, fixed-4:0.35, fixed-8:0.05")
    from_map = Ratio.parse({"sp2-4": 0.6, C("fixed-4"): 0.35, "fixed8": "0.05"})
    assert from_text == from_map
    assert from_text.candidates == (C("sp2-4"), C("fixed-4"), C("fixed-8"))
    assert Ratio.parse(from_text) is from_text
    assert str(from_text) == "sp2-4:0.6,fixed-4:0.35,fixed-8:0.05"
    assert Ratio.parse(str(from_text)) == from_text
    assert from_text.to_dict() == {"sp2-4": 0.6, "fixed-4": 0.35, "fixed-8": 0.05}
    assert Ratio.parse(from_text.to_dict()) == from_text


def test_single_candidate_forms() -> None:
    expected = Ratio(((C("pot-4"), 1.0),))
    assert Ratio.parse("pot-4") == expected
    assert Ratio.parse(C("pot-4")) == expected
    assert Ratio.uniform("pot4") == expected
    assert Ratio.parse("pot-4,") == expected  # empty parts are ignored
    assert expected.row_counts(13) == {C("pot-4"): 13}


def test_eq_bits() -> None:
    assert Ratio.parse("sp2-4:0.6,fixed-4:0.35,fixed-8:0.05").eq_bits == pytest.approx(4.2)
    assert Ratio.parse("fixed-8").eq_bits == 8


def test_row_counts_by_hand() -> None:
    r = Ratio.parse("sp2-4:0.6,fixed-4:0.35,fixed-8:0.05")
    # 9.6, 5.6, 0.8 -> floors 9, 5, 0; the 2 rows left go to 0.8, then 0.6 (listed first).
    assert list(r.row_counts(16).values()) == [10, 5, 1]
    # 38.4, 22.4, 3.2 -> 38, 22, 3; one row left, a tie of 0.4 between equal bits: first.
    assert list(r.row_counts(64).values()) == [39, 22, 3]
    assert list(r.row_counts(1).values()) == [1, 0, 0]
    assert list(r.row_counts(0).values()) == [0, 0, 0]


def test_row_count_ties_go_to_more_bits_then_first_listed() -> None:
    assert list(Ratio.parse("sp2-4:0.5,fixed-8:0.5").row_counts(3).values()) == [1, 2]
    assert list(Ratio.parse("sp2-4:0.5,fixed-4:0.5").row_counts(3).values()) == [2, 1]
    assert list(Ratio.parse("fixed-4:0.5,sp2-4:0.5").row_counts(3).values()) == [2, 1]


def test_ties_hidden_by_float_noise_still_follow_the_rule() -> None:
    # 0.85 * 4 is 3.3999999999999999 in floats: its remainder ties with 0.1 * 4 = 0.4.
    r = Ratio.parse("sp2-4:0.05,fixed-4:0.1,fixed-8:0.85")
    assert list(r.row_counts(4).values()) == [0, 0, 4]


def _exact_largest_remainder(shares: list[tuple[Candidate, str]], rows: int) -> list[int]:
    exact = [Fraction(s) * rows for _, s in shares]
    counts = [math.floor(x) for x in exact]
    order = sorted(
        range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), -shares[i][0].bits, i)
    )
    for i in order[: rows - sum(counts)]:
        counts[i] += 1
    return counts


def test_row_counts_match_exact_arithmetic_on_decimal_ratios() -> None:
    trio = [C("sp2-4"), C("fixed-4"), C("fixed-8")]
    for a, b in itertools.product(range(0, 101, 10), repeat=2):
        if a + b > 100:
            continue
        decimals = [f"{a / 100:g}", f"{b / 100:g}", f"{(100 - a - b) / 100:g}"]
        ratio = Ratio(tuple((c, float(s)) for c, s in zip(trio, decimals, strict=True)))
        for rows in range(1, 41):
            expected = _exact_largest_remainder(list(zip(trio, decimals, strict=True)), rows)
            assert list(ratio.row_counts(rows).values()) == expected, (str(ratio), rows)


@st.composite
def ratios(draw: st.DrawFn) -> Ratio:
    chosen = draw(st.lists(st.sampled_from(ALL_CANDIDATES), min_size=1, max_size=4, unique=True))
    weights = draw(st.lists(st.integers(0, 100), min_size=len(chosen), max_size=len(chosen)))
    if sum(weights) == 0:
        weights[0] = 1
    total = sum(weights)
    return Ratio(tuple((c, w / total) for c, w in zip(chosen, weights, strict=True)))


@settings(max_examples=80, deadline=None)
@given(ratio=ratios(), rows=st.integers(0, 300), seed=st.integers(0, 2**16))
def test_counts_follow_the_ratio(ratio: Ratio, rows: int, seed: int) -> None:
    counts = ratio.row_counts(rows)
    assert list(counts) == list(ratio.candidates)
    assert sum(counts.values()) == rows
    for candidate, share in ratio.shares:
        assert counts[candidate] >= 0
        assert abs(counts[candidate] - share * rows) < 1
    # And the row assignment realises exactly those counts.
    rng = np.random.default_rng(seed)
    stats = RowStats(sensitivity=rng.random(rows), shape=rng.random(rows))
    assignment = assign_rows(ratio, stats)
    assert assignment.rows == rows
    assert assignment.counts() == counts
