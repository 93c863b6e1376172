"""GPTQ-style rounding with error feedback (Frantar et al., 2023), for row-wise mixed grids.

Columns are quantised one at a time; each column's rounding error is spread over the
columns not yet quantised, weighted by the inverse of the layer input's second-moment
matrix ``H = E[x x^T]``, so that the layer's *output* error stays small. Each row keeps its
own grid and clip level, so mixed schemes and precisions need nothing special: a column is
quantised with every row on its own candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from mixq.errors import CalibrationError

# Added to H's diagonal, as a fraction of its mean, so the Cholesky factorisation exists.
DAMPING = 0.01
# Columns per lazy batch update; 128 as in the GPTQ paper.
BLOCK = 128


def gptq_rows(
    w_rows: Tensor,
    hessian: Tensor,
    quantize_column: Callable[[Tensor], Tensor],
    *,
    block: int = BLOCK,
) -> Tensor:
    """Quantise ``w_rows`` (R, C) column by column; ``hessian`` is ``E[x x^T]`` (C, C).

    ``quantize_column`` maps a column (R,) to its quantised values (each row on its grid).
    Returns the quantised weights (R, C), every value on its row's grid.

    >>> w = torch.tensor([[0.30, 0.20], [0.55, -0.40]])
    >>> x = torch.tensor([[1.0, 1.0], [1.0, 0.9], [0.9, 1.0]])  # strongly correlated inputs
    >>> q = gptq_rows(w, x.T @ x / 3, lambda col: torch.round(col * 4) / 4)
    >>> bool(((q @ x.T - w @ x.T).norm()) <= ((torch.round(w * 4) / 4) @ x.T - w @ x.T).norm())
    True
    """
    if block < 1:
        raise CalibrationError(f"GPTQ's block must be at least one column, got {block}")
    w = w_rows.detach().double().clone()
    h = hessian.detach().double().clone()
    dead = torch.diagonal(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += DAMPING * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    upper = _inverse_cholesky_upper(h)
    quantized = torch.zeros_like(w)
    columns = w.shape[1]
    for start in range(0, columns, block):
        end = min(start + block, columns)
        # Lazy batch update (GPTQ's blocked form): errors feed back inside the block column
        # by column, and onto the columns after it in one matrix product.
        q_block, errors = _round_block(
            w[:, start:end], upper[start:end, start:end], quantize_column, w_rows.dtype
        )
        quantized[:, start:end] = q_block
        w[:, end:] -= errors @ upper[start:end, end:]
    return quantized.to(w_rows.dtype)


def _round_block(
    w_block: Tensor,
    upper: Tensor,
    quantize_column: Callable[[Tensor], Tensor],
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """The block's quantised columns and scaled errors, each ``(R, block)``.

    The block is held transposed, so that each column is contiguous, and every step is
    elementwise (products commute exactly), so the values are those of the column-major
    loop bit for bit. The steps are too small to share between threads: on one thread
    they skip OpenMP's fork and join, which on a busy machine costs more than the step.
    """
    remaining = w_block.T.contiguous()  # (block, R): column k is row k
    quantized = torch.empty_like(remaining)
    errors = torch.empty_like(remaining)
    diagonal = torch.diagonal(upper).tolist()
    update = torch.empty_like(remaining)
    with _one_thread():
        for col in range(remaining.shape[0]):
            q = quantize_column(remaining[col].to(dtype)).double()
            quantized[col] = q
            error = torch.sub(remaining[col], q, out=errors[col]).div_(diagonal[col])
            later = remaining[col + 1 :]
            product = update[col + 1 :]
            torch.mul(upper[col, col + 1 :].unsqueeze(1), error, out=product)
            later -= product
    return quantized.T, errors.T.contiguous()


@contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _inverse_cholesky_upper(h: Tensor) -> Tensor:
    """Upper Cholesky factor of ``H^-1``, which gives GPTQ's update coefficients."""
    for attempt in range(6):
        try:
            lower = torch.linalg.cholesky(h)
            inverse = torch.cholesky_inverse(lower)
            return torch.linalg.cholesky(inverse, upper=True)
        except torch.linalg.LinAlgError:
            h = h + (10.0**attempt) * DAMPING * torch.diagonal(h).mean() * torch.eye(
                h.shape[0], dtype=h.dtype, device=h.device
            )
    raise torch.linalg.LinAlgError("input second-moment matrix is not positive definite")
