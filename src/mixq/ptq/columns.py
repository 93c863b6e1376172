"""One weight column quantised at a time, every row on its own grid, as GPTQ's loop needs it.

:class:`~mixq.nn.weight_quant.RowWeightQuantizer` groups rows by candidate (a gather, a
fake quantisation per candidate, a scatter). That costs little on a whole weight, but GPTQ
quantises one column at a time, thousands of times per layer, where those steps are a few
microseconds each of fixed cost. Here the per-row clip levels and grids are laid out once
per layer, so a column costs a handful of whole-column operations: the same float
operations on every element as the quantiser's, hence the same values bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mixq.fakequant import MIN_SCALE, lsq_gradient_factor, scale_gradient
from mixq.grid_tensors import signed_grid
from mixq.nn.weight_quant import RowWeightQuantizer

ColumnQuantizer = Callable[[Tensor], Tensor]


def column_quantizer(quantizer: RowWeightQuantizer, dtype: torch.dtype) -> ColumnQuantizer:
    """``quantizer`` applied to one column ``(R,)`` of dtype ``dtype``: the values of
    ``quantizer(col.unsqueeze(1)).squeeze(1)``, bit for bit, in a few whole-column steps.

    A subclass (whose forward may differ) or a switched-off quantiser gets that call itself.

    >>> from mixq.assignment import RowAssignment
    >>> q = RowWeightQuantizer(RowAssignment.from_rows(["fixed-4", "sp2-4"]), elements_per_row=2)
    >>> q.init_scales(torch.tensor([[0.8, -0.1], [0.5, 0.3]]), method="max")
    >>> column_quantizer(q, torch.float32)(torch.tensor([0.33, 0.33]))
    tensor([0.3429, 0.3125])
    """
    if type(quantizer) is not RowWeightQuantizer or not quantizer.enabled:
        return lambda col: quantizer(col.unsqueeze(1)).squeeze(1)
    return _RowGrids(quantizer, dtype)


class _RowGrids:
    """Each row's clip level ``(R, 1)``, grid midpoints ``(R, K)`` (padded with ``+inf``) and
    levels ``(R, K + 1)``, so that a column is searched and indexed row by row at once."""

    def __init__(self, quantizer: RowWeightQuantizer, dtype: torch.dtype) -> None:
        with torch.no_grad():
            alpha = quantizer.alpha.detach()
            codes = quantizer.row_codes
            # The quantiser's own steps per row: the LSQ-scaled clip (its value is the clip's),
            # floored at MIN_SCALE, in the clip's dtype.
            self.scale = torch.empty_like(alpha)
            grids = []
            for code, candidate in enumerate(quantizer.candidates):
                rows = codes == code
                factor = lsq_gradient_factor(quantizer.elements_per_row, candidate)
                self.scale[rows] = scale_gradient(alpha[rows], factor).clamp_min(MIN_SCALE)
                grids.append(signed_grid(candidate, alpha.device))
            # The dtype the quantiser rounds in: that of the column divided by the clip.
            rounding = torch.promote_types(dtype, alpha.dtype)
            width = max(midpoints.numel() for _, midpoints in grids)
            rows_count = codes.numel()
            device = alpha.device  # rows index them on the clips' device
            self.midpoints = torch.full(
                (rows_count, width), torch.inf, dtype=rounding, device=device
            )
            self.levels = torch.empty((rows_count, width + 1), dtype=rounding, device=device)
            for code, (levels, midpoints) in enumerate(grids):
                rows = (codes == code).nonzero().flatten()
                count = midpoints.numel()
                self.midpoints[rows, :count] = midpoints.to(rounding)
                self.levels[rows, : count + 1] = levels.to(rounding)
                # Beyond a row's own levels (reached only by NaN): its top level.
                self.levels[rows, count + 1 :] = levels[-1].to(rounding)
            self.scale = self.scale.unsqueeze(1)  # (R, 1), as a column is divided

    def __call__(self, column: Tensor) -> Tensor:
        x = (column.unsqueeze(1) / self.scale).clamp(-1.0, 1.0)
        # torch.bucketize's search, each row against its own midpoints: ties go to the level
        # below, a finite value stops at the +inf padding, NaN goes past it as in bucketize.
        rounded = self.levels.gather(1, torch.searchsorted(self.midpoints, x))
        # The straight-through form's value, as fake_quant_rows computes it.
        return ((x + (rounded - x)) * self.scale).squeeze(1)
