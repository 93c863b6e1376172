"""Candidates: parsing, printing, ordering and the bit range of each scheme."""

from __future__ import annotations

import pytest

from mixq.errors import SchemeError
from mixq.schemes import BITS_RANGE, Candidate, Scheme, parse_scheme


@pytest.mark.parametrize(
    ("text", "scheme", "bits"),
    [
        ("fixed-4", Scheme.FIXED, 4),
        ("fixed4", Scheme.FIXED, 4),
        ("  POT-3 ", Scheme.POT, 3),
        ("Sp2-8", Scheme.SP2, 8),
        ("sp2-3", Scheme.SP2, 3),
    ],
)
def test_parse(text: str, scheme: Scheme, bits: int) -> None:
    candidate = Candidate.parse(text)
    assert candidate.scheme is scheme
    assert candidate.bits == bits
    assert str(candidate) == f"{scheme.value}-{bits}"


def test_parse_passes_a_candidate_through_and_str_round_trips() -> None:
    candidate = Candidate(Scheme.SP2, 4)
    assert Candidate.parse(candidate) is candidate
    assert Candidate.parse(str(candidate)) == candidate


def test_scheme_given_as_string_is_normalised() -> None:
    candidate = Candidate("FIXED", 8)  # type: ignore[arg-type]
    assert candidate.scheme is Scheme.FIXED
    assert candidate == Candidate(Scheme.FIXED, 8)
    assert parse_scheme("Pot") is Scheme.POT


def test_candidates_are_hashable_and_ordered() -> None:
    a, b = Candidate.parse("fixed-4"), Candidate.parse("fixed-8")
    assert len({a, b, Candidate.parse("fixed4")}) == 2
    assert a < b


@pytest.mark.parametrize(("scheme", "low", "high"), [("fixed", 2, 8), ("pot", 2, 8), ("sp2", 3, 8)])
def test_bit_ranges(scheme: str, low: int, high: int) -> None:
    assert BITS_RANGE[Scheme(scheme)] == (low, high)
    for bits in range(low, high + 1):
        assert Candidate.parse(f"{scheme}-{bits}").bits == bits
    for bits in (0, 1, low - 1, high + 1, 16):
        if low <= bits <= high:
            continue
        message = rf"{scheme} supports {low}\.\.{high} bits, got {bits}"
        with pytest.raises(SchemeError, match=message):
            Candidate.parse(f"{scheme}-{bits}")
