"""Fake quantisation at real-valued bit widths: DFQ's differentiable relaxation.

A row with ``b`` bits is quantised on the grids of ``k = floor(b)`` and ``k + 1`` and the two
results are mixed, ``(1 - t) Q_k(w) + t Q_{k+1}(w)`` with ``t = b - k``. The output is
continuous in ``b`` and its derivative is ``Q_{k+1}(w) - Q_k(w)``: a bit helps as much as
it changes the row. At integer ``b`` it equals plain fake quantisation at ``b`` bits.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from mixq.errors import SchemeError
from mixq.fakequant import fake_quant_rows, lsq_gradient_factor, scale_gradient
from mixq.schemes import BITS_RANGE, Candidate, Scheme, parse_scheme

Granularity = Literal["row", "layer"]  # a row is an output channel


class FractionalBitsQuantizer(nn.Module):
    """A drop-in for a layer's ``weight_quant``: one learnable bit width per row (or one for
    the layer) and one learnable clip level per row.

    >>> q = FractionalBitsQuantizer(torch.ones(1), 3, "fixed", init_bits=2.5)
    >>> w = torch.tensor([[0.9, 0.4, -0.2]])
    >>> q(w).detach()  # halfway between fixed-2 (0, ±1) and fixed-3 (0, ±1/3, ±2/3, ±1)
    tensor([[ 1.0000,  0.1667, -0.1667]])
    """

    def __init__(
        self,
        alpha: Tensor,
        elements_per_row: int,
        scheme: Scheme | str,
        *,
        init_bits: float,
        min_bits: int | None = None,
        max_bits: int | None = None,
        granularity: Granularity = "row",
    ) -> None:
        super().__init__()
        self.scheme = parse_scheme(scheme)
        low, high = BITS_RANGE[self.scheme]
        self.min_bits = low if min_bits is None else min_bits
        self.max_bits = high if max_bits is None else max_bits
        if not low <= self.min_bits <= self.max_bits <= high:
            raise SchemeError(
                f"{self.scheme.value} bits must satisfy {low} <= min <= max <= {high}, "
                f"got {self.min_bits}..{self.max_bits}"
            )
        if granularity not in ("row", "layer"):
            raise SchemeError(f"granularity must be 'row' or 'layer', got {granularity!r}")
        self.granularity: Granularity = granularity
        self.elements_per_row = elements_per_row
        self.alpha = nn.Parameter(alpha.detach().clone().float())
        units = alpha.numel() if granularity == "row" else 1
        start = float(min(max(float(init_bits), self.min_bits), self.max_bits))
        self.bits = nn.Parameter(torch.full((units,), start, device=self.alpha.device))

    @property
    def rows(self) -> int:
        return self.alpha.numel()

    def row_bits(self) -> Tensor:
        """Each row's bit width, clamped to the allowed range, shape ``(rows,)``."""
        bits = self.bits.clamp(self.min_bits, self.max_bits)
        return bits if self.granularity == "row" else bits.expand(self.rows)

    @torch.no_grad()
    def project(self) -> None:
        """Put the bit widths back into range after an optimiser step."""
        self.bits.clamp_(self.min_bits, self.max_bits)

    def forward(self, w_rows: Tensor) -> Tensor:
        bits = self.row_bits()
        low = bits.detach().floor().long()  # (rows,)
        share_high = (bits - low.to(bits.dtype)).unsqueeze(1)  # (rows, 1), in [0, 1)
        out = torch.zeros_like(w_rows)
        for k in torch.unique(low).tolist():
            rows = (low == k).nonzero().flatten()
            w = w_rows.index_select(0, rows)
            part = self._quantize(w, rows, k)
            if k < self.max_bits:
                high = self._quantize(w, rows, k + 1)
                part = part + share_high.index_select(0, rows) * (high - part)
            out = out.index_copy(0, rows, part)
        return out

    def _quantize(self, w: Tensor, rows: Tensor, bits: int) -> Tensor:
        candidate = Candidate(self.scheme, bits)
        factor = lsq_gradient_factor(self.elements_per_row, candidate)
        alpha = scale_gradient(self.alpha.index_select(0, rows), factor)
        return fake_quant_rows(w, alpha, candidate)

    def extra_repr(self) -> str:
        return (
            f"rows={self.rows}, {self.scheme.value} {self.min_bits}..{self.max_bits} bits "
            f"per {self.granularity}"
        )
