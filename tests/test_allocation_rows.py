"""Row assignment inside a layer: precision by sensitivity, scheme by shape or by error."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixq.allocation.rows import RowStats, assign_rows
from mixq.errors import RatioError
from mixq.ratio import Ratio
from mixq.schemes import Candidate

C = Candidate.parse


def _names(assignment) -> list[str]:
    return [str(c) for c in assignment.row_candidates()]


def test_variance_rule_by_hand() -> None:
    ratio = Ratio.parse("sp2-4:0.5,fixed-4:0.25,fixed-8:0.25")  # 8 rows: 4, 2, 2
    stats = RowStats(
        sensitivity=np.array([0.1, 9.0, 0.3, 0.2, 7.0, 0.5, 0.4, 0.6]),
        shape=np.array([0.30, 0.01, 0.05, 0.25, 0.02, 0.10, 0.33, 0.08]),
    )
    # Rows 1 and 4 are the most sensitive: fixed-8, although they are the most bell-shaped.
    # Of the rest, the four lowest shapes (2, 7, 5, 3) take SP2, the flattest (0, 6) fixed-4.
    assert _names(assign_rows(ratio, stats)) == [
        "fixed-4",
        "fixed-8",
        "sp2-4",
        "sp2-4",
        "fixed-8",
        "sp2-4",
        "fixed-4",
        "sp2-4",
    ]


def test_variance_rule_orders_pot_then_sp2_then_fixed() -> None:
    ratio = Ratio.parse({"fixed-4": 1 / 3, "sp2-4": 1 / 3, "pot-4": 1 / 3})
    stats = RowStats(sensitivity=np.zeros(6), shape=np.array([0.3, 0.01, 0.2, 0.1, 0.02, 0.25]))
    assert _names(assign_rows(ratio, stats)) == [
        "fixed-4",
        "pot-4",
        "sp2-4",
        "sp2-4",
        "pot-4",
        "fixed-4",
    ]


def test_equal_sensitivities_keep_row_order() -> None:
    ratio = Ratio.parse("fixed-4:0.5,fixed-8:0.5")
    stats = RowStats(sensitivity=np.ones(4), shape=np.zeros(4))
    assert _names(assign_rows(ratio, stats)) == ["fixed-8", "fixed-8", "fixed-4", "fixed-4"]


def test_uniform_ratio_gives_every_row_the_candidate() -> None:
    stats = RowStats(sensitivity=np.random.default_rng(0).random(7), shape=np.zeros(7))
    a = assign_rows(Ratio.parse("sp2-5"), stats)
    assert a.candidates == (C("sp2-5"),)
    assert a.codes.tolist() == [0] * 7


def test_error_rule_picks_the_lower_error_scheme_under_counts() -> None:
    ratio = Ratio.parse("sp2-4:0.5,fixed-4:0.5")
    errors = {
        C("sp2-4"): np.array([1.0, 5.0, 2.0, 9.0]),
        C("fixed-4"): np.array([3.0, 1.0, 2.5, 1.0]),
    }
    stats = RowStats(np.zeros(4), np.zeros(4), errors)
    # Gains sp2 - fixed: -2, 4, -0.5, 8: rows 0 and 2 take SP2.
    assert _names(assign_rows(ratio, stats, "error")) == ["sp2-4", "fixed-4", "sp2-4", "fixed-4"]
    # The variance rule ignores the errors.
    stats_shape = RowStats(np.zeros(4), np.array([0.0, 0.1, 0.3, 0.2]), errors)
    assert _names(assign_rows(ratio, stats_shape)) == ["sp2-4", "sp2-4", "fixed-4", "fixed-4"]


def _brute_force_best(
    candidates: tuple[Candidate, ...], counts: dict[Candidate, int], errors: dict, rows: int
) -> float:
    best = np.inf
    target = [counts[c] for c in candidates]
    for codes in itertools.product(range(len(candidates)), repeat=rows):
        if [codes.count(i) for i in range(len(candidates))] != target:
            continue
        best = min(best, sum(errors[candidates[k]][r] for r, k in enumerate(codes)))
    return best


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 8),
    three=st.booleans(),
    weights=st.lists(st.integers(0, 5), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_error_rule_is_optimal_against_brute_force(
    rows: int, three: bool, weights: list[int], seed: int
) -> None:
    names = ["sp2-4", "fixed-4", "pot-4"] if three else ["sp2-4", "fixed-4"]
    weights = weights[: len(names)]
    if sum(weights) == 0:
        weights[0] = 1
    ratio = Ratio(tuple((C(n), w / sum(weights)) for n, w in zip(names, weights, strict=False)))
    rng = np.random.default_rng(seed)
    errors = {c: rng.random(rows) for c in ratio.candidates}
    stats = RowStats(rng.random(rows), rng.random(rows), errors)
    assignment = assign_rows(ratio, stats, "error")
    counts = ratio.row_counts(rows)
    assert assignment.counts() == counts
    total = sum(errors[c][r] for r, c in enumerate(assignment.row_candidates()))
    assert total == pytest.approx(_brute_force_best(ratio.candidates, counts, errors, rows))


def test_error_rule_splits_only_rows_of_equal_bits() -> None:
    ratio = Ratio.parse("sp2-4:0.5,fixed-4:0.25,fixed-8:0.25")
    sensitivity = np.array([0.0, 3.0, 0.0, 0.0])
    # fixed-8 has the lowest error on row 0, yet the most sensitive row (1) takes it.
    errors = {
        C("sp2-4"): np.array([1.0, 1.0, 0.1, 2.0]),
        C("fixed-4"): np.array([1.0, 1.0, 0.5, 0.1]),
        C("fixed-8"): np.array([0.0, 1.0, 1.0, 1.0]),
    }
    a = assign_rows(ratio, RowStats(sensitivity, np.zeros(4), errors), "error")
    assert a.row_candidates()[1] == C("fixed-8")
    assert a.counts() == ratio.row_counts(4)
    # Row 0 ties (1.0 vs 1.0): either way rows 2 and 3 go to their best scheme.
    assert a.row_candidates()[2] == C("sp2-4") and a.row_candidates()[3] == C("fixed-4")


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 60), seed=st.integers(0, 2**16))
def test_most_sensitive_rows_get_the_most_bits(rows: int, seed: int) -> None:
    ratio = Ratio.parse("sp2-4:0.6,fixed-4:0.3,fixed-8:0.1")
    rng = np.random.default_rng(seed)
    sensitivity = rng.permutation(rows).astype(float)  # distinct scores
    shape = rng.random(rows)
    a = assign_rows(ratio, RowStats(sensitivity, shape))
    assert a.counts() == ratio.row_counts(rows)
    chosen = a.row_candidates()
    high = np.array([c == C("fixed-8") for c in chosen])
    if high.any() and (~high).any():
        assert sensitivity[high].min() > sensitivity[~high].max()
    # Among the 4-bit rows, every SP2 row is at least as bell-shaped as every fixed-4 row.
    sp2 = np.array([c == C("sp2-4") for c in chosen])
    fixed4 = np.array([c == C("fixed-4") for c in chosen])
    if sp2.any() and fixed4.any():
        assert shape[sp2].max() <= shape[fixed4].min()


def test_bad_rule_and_missing_errors() -> None:
    stats = RowStats(np.zeros(2), np.zeros(2))
    ratio = Ratio.parse("sp2-4:0.5,fixed-4:0.5")
    with pytest.raises(RatioError, match="unknown scheme rule 'hessian'"):
        assign_rows(ratio, stats, "hessian")  # type: ignore[arg-type]
    with pytest.raises(RatioError, match="needs per-row errors for sp2-4, fixed-4"):
        assign_rows(ratio, stats, "error")


def test_assign_layer_rows_is_the_explicit_rule_and_skips_scoring_for_one_candidate() -> None:
    import torch

    from mixq.allocation.rows import assign_layer_rows, candidate_row_errors
    from mixq.scoring import row_shape

    torch.manual_seed(0)
    w = torch.randn(12, 9)
    ratio = Ratio.parse("sp2-4:0.5,fixed-4:0.25,fixed-8:0.25")
    scores = np.linspace(0.0, 1.0, 12)[::-1].copy()
    errors = candidate_row_errors(w, ratio.candidates, "max")
    explicit = assign_rows(ratio, RowStats(scores, row_shape(w), errors), "error")
    shared = assign_layer_rows(w, ratio, lambda: scores, "error", "max")
    assert shared.row_candidates() == explicit.row_candidates()

    def never() -> np.ndarray:
        raise AssertionError("a single candidate needs no row scores")

    uniform = assign_layer_rows(w, Ratio.parse("fixed-4"), never)
    assert {str(c) for c in uniform.row_candidates()} == {"fixed-4"}
