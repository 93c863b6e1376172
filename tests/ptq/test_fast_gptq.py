"""GPTQ's fast paths against the implementations they replaced, bit for bit.

The column quantiser must give the row-wise weight quantiser's values for every column,
and the transposed single-thread block loop the column-major loop's rounded weights.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from mixq.assignment import RowAssignment
from mixq.grid_tensors import signed_grid
from mixq.nn.weight_quant import RowWeightQuantizer
from mixq.ptq.columns import column_quantizer
from mixq.ptq.gptq import DAMPING, _inverse_cholesky_upper, _round_block, gptq_rows

CANDIDATES = ("sp2-4", "fixed-4", "pot-4", "fixed-8", "fixed-2", "sp2-3")


def _quantizer(
    rows: int, columns: int, candidates: tuple[str, ...], seed: int = 0
) -> tuple[RowWeightQuantizer, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    codes = [
        candidates[int(i)] for i in torch.randint(len(candidates), (rows,), generator=generator)
    ]
    quantizer = RowWeightQuantizer(RowAssignment.from_rows(codes), columns)
    w = torch.randn(rows, columns, generator=generator) * 0.1
    quantizer.init_scales(w, method="mse")
    return quantizer, w


def _tied_columns(quantizer: RowWeightQuantizer) -> Tensor:
    """Columns whose values sit exactly on each row's grid midpoints and levels (the ties),
    beyond the clip, at zero and at minus zero: where a different rounding path shows."""
    alpha = quantizer.alpha.detach()
    columns = []
    for pick in range(6):
        column = torch.empty_like(alpha)
        for row, code in enumerate(quantizer.row_codes.tolist()):
            levels, midpoints = signed_grid(quantizer.candidates[code])
            points = torch.cat(
                [midpoints, levels, torch.tensor([1.7, -3.0, 0.0, -0.0, float("nan")])]
            )
            column[row] = points[(row * 7 + pick * 5) % points.numel()] * alpha[row]
        columns.append(column)
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("candidates", [CANDIDATES, ("fixed-4",), ("sp2-4", "fixed-4")])
def test_the_column_quantiser_gives_the_quantisers_values_bit_for_bit(
    candidates: tuple[str, ...],
) -> None:
    quantizer, w = _quantizer(97, 40, candidates)
    with torch.no_grad():
        quantizer.alpha[3] = 0.0  # floored at MIN_SCALE
        fast = column_quantizer(quantizer, torch.float32)
        columns = torch.cat([w, _tied_columns(quantizer)], dim=1)
        for column in columns.T:
            expected = quantizer(column.unsqueeze(1)).squeeze(1)
            got = fast(column.contiguous())
            assert torch.equal(got.view(torch.int32), expected.view(torch.int32))


def test_a_switched_off_quantiser_leaves_columns_as_they_are() -> None:
    quantizer, w = _quantizer(8, 4, ("fixed-4",))
    quantizer.enabled = False
    assert torch.equal(column_quantizer(quantizer, torch.float32)(w[:, 0]), w[:, 0])


def _reference_round_block(
    w_block: Tensor, u: Tensor, quantize_column: Callable[[Tensor], Tensor], dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """The column-major block loop that the transposed single-thread one replaced."""
    w_block, out = w_block.clone(), torch.empty_like(w_block)
    errors = torch.empty_like(w_block)
    for col in range(w_block.shape[1]):
        q = quantize_column(w_block[:, col].to(dtype)).double()
        out[:, col] = q
        error = (w_block[:, col] - q) / u[col, col]
        w_block[:, col + 1 :] -= error.unsqueeze(1) * u[col, col + 1 :].unsqueeze(0)
        errors[:, col] = error
    return out, errors


def _reference_gptq_rows(
    w_rows: Tensor, hessian: Tensor, quantize_column: Callable[[Tensor], Tensor], block: int
) -> Tensor:
    """gptq_rows before the transposed single-thread block loop (the committed oracle)."""
    w = w_rows.detach().double().clone()
    h = hessian.detach().double().clone()
    dead = torch.diagonal(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += DAMPING * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    upper = _inverse_cholesky_upper(h)
    quantized = torch.zeros_like(w)
    for start in range(0, w.shape[1], block):
        end = min(start + block, w.shape[1])
        u = upper[start:end, start:end]
        out, errors = _reference_round_block(w[:, start:end], u, quantize_column, w_rows.dtype)
        quantized[:, start:end] = out
        w[:, end:] -= errors @ upper[start:end, end:]
    return quantized.to(w_rows.dtype)


def _correlated_hessian(columns: int) -> Tensor:
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(4 * columns, columns // 3 + 1, generator=generator)
    x = base @ torch.randn(columns // 3 + 1, columns, generator=generator)
    x[:, 2] = 0.0  # a dead input column
    return x.T.double() @ x.double() / x.shape[0]


def test_the_block_loop_gives_the_column_major_loops_errors_bit_for_bit() -> None:
    quantizer, w = _quantizer(40, 96, CANDIDATES, seed=3)
    hessian = _correlated_hessian(96)
    upper = _inverse_cholesky_upper(hessian + 0.01 * torch.eye(96, dtype=torch.float64))
    slow = lambda col: quantizer(col.unsqueeze(1)).squeeze(1).detach()  # noqa: E731
    with torch.no_grad():
        expected = _reference_round_block(w.double(), upper, slow, w.dtype)
        got = _round_block(w.double(), upper, column_quantizer(quantizer, w.dtype), w.dtype)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a.view(torch.int64), b.view(torch.int64))
    assert not torch.equal(expected[1], torch.zeros_like(expected[1]))


@pytest.mark.parametrize(("rows", "columns", "block"), [(48, 300, 128), (33, 70, 16), (5, 9, 1)])
def test_gptq_rows_gives_the_previous_loops_rounded_weights(
    rows: int, columns: int, block: int
) -> None:
    quantizer, w = _quantizer(rows, columns, CANDIDATES, seed=rows)
    hessian = _correlated_hessian(columns)
    slow = lambda col: quantizer(col.unsqueeze(1)).squeeze(1).detach()  # noqa: E731
    with torch.no_grad():
        expected = _reference_gptq_rows(w, hessian, slow, block)
        for quantize in (slow, column_quantizer(quantizer, torch.float32)):
            got = gptq_rows(w, hessian, quantize, block=block)
            assert torch.equal(got.view(torch.int32), expected.view(torch.int32))


def test_the_thread_count_is_restored_after_rounding() -> None:
    threads = torch.get_num_threads()
    quantizer, w = _quantizer(4, 6, ("fixed-4",))
    with torch.no_grad():
        gptq_rows(w, torch.eye(6, dtype=torch.float64), column_quantizer(quantizer, w.dtype))
    assert torch.get_num_threads() == threads


def test_column_quantiser_handles_a_double_weight() -> None:
    quantizer, w = _quantizer(12, 5, ("sp2-4", "fixed-4"))
    column = w[:, 0].double()
    with torch.no_grad():
        expected = quantizer(column.unsqueeze(1)).squeeze(1)
        got = column_quantizer(quantizer, torch.float64)(column)
    assert got.dtype == torch.float64 and torch.equal(got, expected)
