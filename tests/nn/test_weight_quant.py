"""RowWeightQuantizer: mixed codes, row order, gradients, scale init and state round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixq.assignment import RowAssignment
from mixq.errors import CheckpointError
from mixq.fakequant import fake_quant_rows, lsq_gradient_factor
from mixq.nn.weight_quant import RowWeightQuantizer, quantization_errors
from mixq.scale_init import init_scale, row_squared_error
from mixq.schemes import Candidate

C = Candidate.parse
MIXED = ("sp2-4", "fixed-4", "fixed-8", "pot-3")


def _reference(w: torch.Tensor, alpha: torch.Tensor, assignment: RowAssignment) -> torch.Tensor:
    """Each row quantised on its own, with its own candidate.

    The quantiser passes its scales through ``scale_gradient`` (LSQ), whose forward value
    is exactly the scale.
    """
    return torch.cat(
        [
            fake_quant_rows(w[r : r + 1], alpha[r : r + 1], candidate)
            for r, candidate in enumerate(assignment.row_candidates())
        ]
    )


def _weights(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


def test_mixed_codes_equal_each_row_quantised_alone() -> None:
    assignment = RowAssignment.from_rows(
        ["sp2-4", "fixed-8", "pot-3", "sp2-4", "fixed-8", "fixed-4", "pot-3", "sp2-4"]
    )
    w = _weights(8, 9)
    q = RowWeightQuantizer(assignment, elements_per_row=9)
    q.init_scales(w)
    out = q(w)
    torch.testing.assert_close(out, _reference(w, q.alpha, assignment), rtol=1e-6, atol=1e-7)
    # Rows differ by candidate: the 8-bit rows are far closer to the float weights.
    err = (out - w).pow(2).sum(dim=1).detach()
    assert float(err[[1, 4]].max()) < float(err[[0, 2, 3, 5, 6, 7]].min())


@settings(max_examples=30, deadline=None)
@given(
    codes=st.lists(st.integers(0, len(MIXED) - 1), min_size=1, max_size=12),
    cols=st.integers(1, 7),
    seed=st.integers(0, 1000),
)
def test_rows_in_any_order(codes: list[int], cols: int, seed: int) -> None:
    assignment = RowAssignment(MIXED, np.array(codes))
    w = _weights(len(codes), cols, seed) * 2
    q = RowWeightQuantizer(assignment, elements_per_row=cols)
    q.init_scales(w, method="max")
    torch.testing.assert_close(q(w), _reference(w, q.alpha, assignment), rtol=1e-6, atol=1e-7)
    assert q.assignment == assignment


def test_single_group_uses_its_own_candidate() -> None:
    # Every row on the second candidate: the first is unused.
    assignment = RowAssignment(("fixed-8", "fixed-2"), np.array([1, 1, 1]))
    w = _weights(3, 5)
    q = RowWeightQuantizer(assignment, 5)
    q.init_scales(w, "max")
    torch.testing.assert_close(q(w), fake_quant_rows(w, q.alpha, C("fixed-2")))
    assert "fixed-2: 3" in repr(q) and "fixed-8" not in repr(q)


def test_gradients_are_ste_with_lsq_factor_per_candidate() -> None:
    assignment = RowAssignment.from_rows(["sp2-4", "fixed-4", "sp2-4", "fixed-8"])
    w = (_weights(4, 6) * 1.5).requires_grad_(True)
    q = RowWeightQuantizer(assignment, elements_per_row=6)
    q.init_scales(w.detach(), method="max")
    with torch.no_grad():
        q.alpha.mul_(0.6)  # some weights outside the clip range
    upstream = _weights(4, 6, seed=3)
    (q(w) * upstream).sum().backward()

    alpha = q.alpha.detach().clone().requires_grad_(True)
    w_ref = w.detach().clone().requires_grad_(True)
    (_reference(w_ref, alpha, assignment) * upstream).sum().backward()
    factors = torch.tensor([lsq_gradient_factor(6, c) for c in assignment.row_candidates()])
    assert torch.equal(w.grad, w_ref.grad)
    inside = (w.detach() / q.alpha.detach().unsqueeze(1)).abs() < 1
    assert torch.equal(w.grad, upstream * inside)
    torch.testing.assert_close(q.alpha.grad, alpha.grad * factors)


@pytest.mark.parametrize("method", ["max", "mse"])
def test_init_scales_per_row_candidate(method: str) -> None:
    assignment = RowAssignment.from_rows(["fixed-2", "sp2-4", "fixed-2", "pot-4", "sp2-4"])
    w = _weights(5, 16)
    q = RowWeightQuantizer(assignment, 16)
    q.init_scales(w, method)  # type: ignore[arg-type]
    for r, candidate in enumerate(assignment.row_candidates()):
        expected = init_scale(w[r : r + 1], candidate, method)  # type: ignore[arg-type]
        torch.testing.assert_close(q.alpha.detach()[r : r + 1], expected)
    torch.testing.assert_close(q.row_errors(w), (q(w) - w).pow(2).sum(dim=1).detach())


def test_disabled_is_identity() -> None:
    q = RowWeightQuantizer(RowAssignment.uniform("fixed-2", 3), 4)
    w = _weights(3, 4)
    q.enabled = False
    assert q(w) is w


def test_set_assignment_regroups_and_keeps_scales() -> None:
    w = _weights(4, 8)
    q = RowWeightQuantizer(RowAssignment.uniform("fixed-8", 4), 8)
    q.init_scales(w, "max")
    alpha = q.alpha.detach().clone()
    new = RowAssignment.from_rows(["pot-2", "fixed-8", "pot-2", "sp2-3"])
    q.set_assignment(new)
    assert torch.equal(q.alpha.detach(), alpha)
    assert q.candidates == new.candidates
    assert q.row_codes.tolist() == [0, 1, 0, 2]
    torch.testing.assert_close(q(w), _reference(w, q.alpha, new), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="assignment has 3 rows, layer has 4"):
        q.set_assignment(RowAssignment.uniform("fixed-8", 3))


def test_state_dict_round_trip() -> None:
    assignment = RowAssignment.from_rows(["sp2-4", "fixed-8", "pot-3", "fixed-8", "sp2-4"])
    w = _weights(5, 12)
    source = RowWeightQuantizer(assignment, 12)
    source.init_scales(w)
    state = source.state_dict()
    assert set(state) == {"alpha", "row_codes", "_extra_state"}
    assert state["_extra_state"]["candidates"] == ["sp2-4", "fixed-8", "pot-3"]

    target = RowWeightQuantizer(RowAssignment.uniform("fixed-2", 5), 12)
    target.load_state_dict(state)
    assert target.candidates == source.candidates
    assert target.assignment == assignment
    assert torch.equal(target(w), source(w))
    assert torch.equal(target._perm, source._perm)  # regrouped after loading


def test_bad_extra_state() -> None:
    q = RowWeightQuantizer(RowAssignment.from_rows(["fixed-4", "fixed-8"]), 3)
    state = q.state_dict()
    with pytest.raises(CheckpointError, match="malformed"):
        q.load_state_dict({**state, "_extra_state": {"version": 1}})
    with pytest.raises(CheckpointError, match="row codes refer to candidates"):
        q.load_state_dict({**state, "_extra_state": {"version": 1, "candidates": ["fixed-4"]}})


def test_quantization_errors() -> None:
    w = _weights(6, 20)
    errors = quantization_errors(w, (C("sp2-4"), C("fixed-4"), C("fixed-8")))
    for candidate, err in errors.items():
        expected = row_squared_error(w, init_scale(w, candidate, "mse"), candidate)
        torch.testing.assert_close(err, expected)
    assert bool((errors[C("fixed-8")] < errors[C("fixed-4")]).all())
