"""Row-wise weight quantiser: one clip level per row, one (scheme, bits) code per row."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mixq.assignment import RowAssignment
from mixq.errors import CheckpointError, SchemeError
from mixq.fakequant import fake_quant_rows, lsq_gradient_factor, scale_gradient
from mixq.scale_init import ScaleMethod, init_scale, row_squared_error
from mixq.schemes import Candidate

_STATE_VERSION = 1


class RowWeightQuantizer(nn.Module):
    """Fake-quantises a ``(rows, elements)`` weight view, row ``r`` with its own candidate.

    Rows are sorted once by code, so a forward pass costs one gather, one fake-quant per
    candidate and one scatter, whatever the number of rows.

    >>> q = RowWeightQuantizer(RowAssignment.from_rows(["fixed-8", "pot-2"]), elements_per_row=2)
    >>> w = torch.tensor([[0.5, -0.25], [0.5, -0.2]])
    >>> q.init_scales(w, method="max")
    >>> q(w).detach()  # row 0: 0.25 on the 8-bit grid; row 1: 2-bit PoT has only 0 and ±1
    tensor([[ 0.5000, -0.2520],
            [ 0.5000,  0.0000]])
    """

    row_codes: Tensor
    _perm: Tensor
    _inverse: Tensor

    def __init__(self, assignment: RowAssignment, elements_per_row: int) -> None:
        super().__init__()
        self.elements_per_row = elements_per_row
        self.enabled = True
        self.alpha = nn.Parameter(torch.ones(assignment.rows))
        self.register_buffer("row_codes", torch.zeros(assignment.rows, dtype=torch.int64))
        self.register_buffer("_perm", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer("_inverse", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.set_assignment(assignment)

    @property
    def assignment(self) -> RowAssignment:
        return RowAssignment(self.candidates, self.row_codes.detach().cpu().numpy())

    def set_assignment(self, assignment: RowAssignment) -> None:
        """Use a new row assignment (clip levels are kept; call :meth:`init_scales` after)."""
        if assignment.rows != self.alpha.numel():
            raise SchemeError(
                f"assignment has {assignment.rows} rows, layer has {self.alpha.numel()}"
            )
        self.candidates: tuple[Candidate, ...] = assignment.candidates
        self.row_codes.copy_(torch.from_numpy(assignment.codes.copy()))
        self._group_rows()

    def _group_rows(self) -> None:
        codes = self.row_codes
        perm = torch.argsort(codes, stable=True)
        self._perm = perm
        self._inverse = torch.argsort(perm)
        tally = torch.bincount(codes.cpu(), minlength=len(self.candidates)).tolist()
        self._groups = [(c, n) for c, n in zip(self.candidates, tally, strict=True) if n > 0]

    @torch.no_grad()
    def init_scales(self, w_rows: Tensor, method: ScaleMethod = "mse") -> None:
        """Set every row's clip level from the weights, for the row's own candidate."""
        for code, candidate in enumerate(self.candidates):
            rows = (self.row_codes == code).nonzero().flatten()
            if rows.numel():
                self.alpha[rows] = init_scale(w_rows[rows], candidate, method).to(self.alpha)

    @torch.no_grad()
    def row_errors(self, w_rows: Tensor) -> Tensor:
        """``||Q(w_r) - w_r||^2`` per row with the current assignment and clip levels."""
        return (self(w_rows) - w_rows).pow(2).sum(dim=1)

    def forward(self, w_rows: Tensor) -> Tensor:
        if not self.enabled:
            return w_rows
        if len(self._groups) == 1:
            candidate = self._groups[0][0]
            return fake_quant_rows(w_rows, self._scaled_alpha(self.alpha, candidate), candidate)
        w_sorted = w_rows.index_select(0, self._perm)
        alpha_sorted = self.alpha.index_select(0, self._perm)
        parts, start = [], 0
        for candidate, count in self._groups:
            alpha = self._scaled_alpha(alpha_sorted[start : start + count], candidate)
            parts.append(fake_quant_rows(w_sorted[start : start + count], alpha, candidate))
            start += count
        return torch.cat(parts).index_select(0, self._inverse)

    def _scaled_alpha(self, alpha: Tensor, candidate: Candidate) -> Tensor:
        return scale_gradient(alpha, lsq_gradient_factor(self.elements_per_row, candidate))

    def get_extra_state(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "candidates": [str(c) for c in self.candidates]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        # Runs after the buffers are loaded, so the new codes are in place.
        try:
            candidates = tuple(Candidate.parse(c) for c in state["candidates"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"weight quantiser state is malformed: {state!r}") from exc
        if self.row_codes.numel() and int(self.row_codes.max()) >= len(candidates):
            raise CheckpointError("row codes refer to candidates the checkpoint does not list")
        self.candidates = candidates
        self._group_rows()

    def extra_repr(self) -> str:
        counts = ", ".join(f"{c}: {n}" for c, n in self._groups)
        return f"rows={self.alpha.numel()}, {counts}"


def quantization_errors(
    w_rows: Tensor, candidates: tuple[Candidate, ...], method: ScaleMethod = "mse"
) -> dict[Candidate, Tensor]:
    """Each row's squared error under each candidate, with that candidate's best clip level."""
    with torch.no_grad():
        return {c: row_squared_error(w_rows, init_scale(w_rows, c, method), c) for c in candidates}
