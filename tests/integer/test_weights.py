"""A quantised layer's weights as integers, and their shift-add decomposition."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixq.assignment import RowAssignment
from mixq.errors import IntegerConversionError
from mixq.grids import integer_magnitudes
from mixq.integer.weights import integer_weights, popcount, shift_add_terms
from mixq.nn.layers import QuantConv2d, QuantLinear
from mixq.schemes import Candidate

ROWS = ["sp2-4", "fixed-8", "pot-3", "fixed-4", "sp2-5", "pot-5", "fixed-2", "sp2-3"]


def _conv(rows: list[str]) -> QuantConv2d:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, len(rows), 3)
    bn = torch.nn.BatchNorm2d(len(rows)).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.running_var.uniform_(0.5, 2.0)
    layer = QuantConv2d.from_float(conv, RowAssignment.from_rows(rows), bn=bn, act_bits=4)
    layer.weight_quant.init_scales(layer.weight_rows(), method="mse")
    return layer.eval()


def test_integers_times_steps_are_the_fake_quantised_weights() -> None:
    layer = _conv(ROWS)
    weights = integer_weights(layer)
    assert weights.values.dtype == torch.int64 and weights.values.shape == layer.weight.shape
    fake = layer.quantized_weight().detach().double()
    torch.testing.assert_close(weights.dequantize(), fake, rtol=1e-6, atol=1e-9)
    for row, name in enumerate(ROWS):
        allowed, _ = integer_magnitudes(Candidate.parse(name))
        assert set(weights.values[row].abs().flatten().tolist()) <= set(allowed), name


def test_pot_rows_have_one_set_bit_and_sp2_rows_at_most_two() -> None:
    weights = integer_weights(_conv(ROWS))
    bits = popcount(weights.values.reshape(len(ROWS), -1).abs()).amax(dim=1).tolist()
    for name, most in zip(ROWS, bits, strict=True):
        if name.startswith("pot"):
            assert most == 1
        elif name.startswith("sp2"):
            assert most <= 2


def test_linear_rows_and_the_accumulator_bound() -> None:
    torch.manual_seed(1)
    layer = QuantLinear.from_float(
        torch.nn.Linear(6, 3), RowAssignment.from_rows(["fixed-4", "sp2-4", "fixed-8"])
    )
    layer.weight_quant.init_scales(layer.weight_rows(), method="max")
    weights = integer_weights(layer)
    assert weights.row_bound().tolist() == weights.values.abs().sum(dim=1).tolist()
    # With the max clip every row reaches its top level once: 7, 8 and 127.
    assert weights.values.abs().amax(dim=1).tolist() == [7, 8, 127]


def test_wide_pot_grids_are_refused() -> None:
    with pytest.raises(IntegerConversionError, match="pot-8"):
        integer_weights(_conv(["pot-8"] * 2))


def test_switched_off_weight_quantiser_is_refused() -> None:
    layer = _conv(ROWS)
    layer.weight_quant.enabled = False
    with pytest.raises(Exception, match="switched off"):
        integer_weights(layer)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**12), 2**12), min_size=1, max_size=30))
def test_shift_add_terms_rebuild_the_integers(values: list[int]) -> None:
    tensor = torch.tensor([values])
    terms = shift_add_terms(tensor)
    rebuilt = sum((t << k for k, t in terms), torch.zeros_like(tensor))
    assert torch.equal(rebuilt, tensor)
    assert all(set(t.unique().tolist()) <= {-1, 0, 1} for _, t in terms)
