"""RowAssignment: codes, counts, equivalent bits and its dict form."""

from __future__ import annotations

import numpy as np
import pytest

from mixq.assignment import RowAssignment
from mixq.errors import SchemeError
from mixq.schemes import Candidate

C = Candidate.parse


def test_from_rows() -> None:
    a = RowAssignment.from_rows(["sp2-4", "fixed-8", "sp2-4", C("fixed-4"), "fixed8"])
    assert a.candidates == (C("sp2-4"), C("fixed-8"), C("fixed-4"))
    assert a.codes.tolist() == [0, 1, 0, 2, 1]
    assert a.rows == 5
    assert a.row_candidates() == [C("sp2-4"), C("fixed-8"), C("sp2-4"), C("fixed-4"), C("fixed-8")]
    assert a.bits_per_row().tolist() == [4, 8, 4, 4, 8]
    assert a.counts() == {C("sp2-4"): 2, C("fixed-8"): 2, C("fixed-4"): 1}
    assert a.eq_bits == pytest.approx(28 / 5)


def test_uniform_and_empty() -> None:
    a = RowAssignment.uniform("pot-3", 4)
    assert a.candidates == (C("pot-3"),)
    assert a.codes.tolist() == [0, 0, 0, 0]
    assert a.eq_bits == 3.0
    empty = RowAssignment.uniform("pot-3", 0)
    assert empty.rows == 0 and empty.eq_bits == 0.0


def test_counts_include_unused_candidates() -> None:
    a = RowAssignment(("fixed-4", "fixed-8"), np.array([0, 0]))
    assert a.counts() == {C("fixed-4"): 2, C("fixed-8"): 0}


def test_codes_are_read_only_int64() -> None:
    a = RowAssignment(("fixed-4", "fixed-8"), [[0, 1], [1, 0]])
    assert a.codes.dtype == np.int64 and a.codes.shape == (4,)
    with pytest.raises(ValueError, match="read-only"):
        a.codes[0] = 1


def test_dict_round_trip_equality_and_hash() -> None:
    a = RowAssignment.from_rows(["sp2-4", "fixed-8", "sp2-4"])
    data = a.to_dict()
    assert data == {"candidates": ["sp2-4", "fixed-8"], "codes": [0, 1, 0]}
    b = RowAssignment.from_dict(data)
    assert b == a and hash(b) == hash(a)
    assert RowAssignment.from_rows(["sp2-4", "sp2-4", "fixed-8"]) != a
    assert RowAssignment(("fixed-8", "sp2-4"), [1, 0, 1]) != a  # same rows, other code table
    assert a != "sp2-4"


def test_bad_assignments() -> None:
    with pytest.raises(SchemeError, match="duplicate candidates"):
        RowAssignment(("fixed-4", "fixed4"), [0, 1])
    with pytest.raises(SchemeError, match=r"row codes must lie in 0\.\.1, got 0\.\.2"):
        RowAssignment(("fixed-4", "fixed-8"), [0, 2])
    with pytest.raises(SchemeError, match=r"got -1\.\.0"):
        RowAssignment(("fixed-4",), [-1, 0])
