"""RMSMP/MSP row assignment inside one layer, for a ratio shared by every layer.

Precision first: the rows with the highest sensitivity take the candidates with the most
bits, as many as the ratio gives them. Then, among rows of equal bits, the scheme:

* ``"variance"`` rule (RMSMP/MSP): bell-shaped rows (most mass near zero relative to their
  peak) go to the grids that are dense near zero (PoT, then SP2), flat rows to fixed-point.
  The shape statistic is ``var(w) / max(w^2)``, which ignores the row's scale.
* ``"error"`` rule: rows go to the scheme that quantises them with less squared error,
  solved exactly under the ratio's counts (a transportation problem).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from mixq.assignment import RowAssignment
from mixq.errors import RatioError
from mixq.ratio import Ratio
from mixq.schemes import Candidate, Scheme

if TYPE_CHECKING:  # torch only for the functions that take a layer's weights
    from torch import Tensor

    from mixq.scale_init import ScaleMethod

SchemeRule = Literal["variance", "error"]

# Grids ordered from most levels near zero to flattest: the variance rule fills them in this
# order with rows from most bell-shaped to flattest.
_NEAR_ZERO_DENSITY = {Scheme.POT: 0, Scheme.SP2: 1, Scheme.FIXED: 2}


@dataclass(frozen=True, eq=False)
class RowStats:
    """What the assignment knows about a layer's rows; every array has shape ``(rows,)``."""

    sensitivity: np.ndarray  # higher: the row keeps more bits
    shape: np.ndarray  # var(w) / max(w^2); lower: more bell-shaped
    errors: Mapping[Candidate, np.ndarray] = field(default_factory=dict)  # error rule only

    @property
    def rows(self) -> int:
        return int(np.asarray(self.sensitivity).size)


def assign_rows(ratio: Ratio, stats: RowStats, rule: SchemeRule = "variance") -> RowAssignment:
    """Assign every row a candidate so that per-candidate counts follow ``ratio`` exactly.

    >>> stats = RowStats(sensitivity=np.array([0.1, 5.0, 0.2, 0.3]),
    ...                  shape=np.array([0.30, 0.05, 0.02, 0.25]))
    >>> a = assign_rows(Ratio.parse("sp2-4:0.5,fixed-4:0.25,fixed-8:0.25"), stats)
    >>> [str(c) for c in a.row_candidates()]
    ['fixed-4', 'fixed-8', 'sp2-4', 'sp2-4']
    """
    if rule not in ("variance", "error"):
        raise RatioError(f"unknown scheme rule {rule!r}; use 'variance' or 'error'")
    rows = stats.rows
    counts = ratio.row_counts(rows)
    candidates = ratio.candidates
    index = {c: i for i, c in enumerate(candidates)}
    codes = np.full(rows, -1, dtype=np.int64)
    # Stable sort on -sensitivity: equal scores keep row order, so results are reproducible.
    by_sensitivity = list(
        np.argsort(-np.asarray(stats.sensitivity, dtype=np.float64), kind="stable")
    )
    for bits in sorted({c.bits for c in candidates}, reverse=True):
        group = [c for c in candidates if c.bits == bits]
        taken = sum(counts[c] for c in group)
        chosen, by_sensitivity = by_sensitivity[:taken], by_sensitivity[taken:]
        chosen_rows = np.array(sorted(chosen), dtype=np.int64)
        split = _split_by_scheme(group, counts, chosen_rows, stats, rule)
        for candidate, rows_of_candidate in split.items():
            codes[rows_of_candidate] = index[candidate]
    return RowAssignment(candidates, codes)


def assign_layer_rows(
    w_rows: Tensor,
    ratio: Ratio,
    row_scores: np.ndarray | Callable[[], np.ndarray],
    rule: SchemeRule = "variance",
    scale_method: ScaleMethod = "max",
    errors: Mapping[Candidate, np.ndarray] | None = None,
) -> RowAssignment:
    """A layer's row assignment, the one rule quantisation, the Hessian scorer and the
    perturbation tables share: one candidate takes every row; otherwise each row's
    sensitivity (``row_scores``, or a function giving it, called only when needed), its
    shape and, for the error rule, its error under each candidate (measured with the clip
    levels of ``scale_method`` unless ``errors`` are given) decide through :func:`assign_rows`.

    >>> import torch
    >>> w = torch.tensor([[0.1, -0.2], [0.9, 0.05], [0.3, 0.3], [-0.5, 0.4]])
    >>> a = assign_layer_rows(w, Ratio.parse("fixed-4:0.5,fixed-8:0.5"), np.array([0, 3, 1, 2]))
    >>> [str(c) for c in a.row_candidates()]
    ['fixed-4', 'fixed-8', 'fixed-4', 'fixed-8']
    """
    if len(ratio.candidates) == 1:
        return RowAssignment.uniform(ratio.candidates[0], w_rows.shape[0])
    if errors is None and rule == "error":
        errors = candidate_row_errors(w_rows, ratio.candidates, scale_method)
    scores = row_scores() if callable(row_scores) else row_scores
    from mixq.scoring import row_shape  # torch-side; this module imports without torch

    stats = RowStats(np.asarray(scores), row_shape(w_rows), dict(errors or {}))
    return assign_rows(ratio, stats, rule)


def candidate_row_errors(
    w_rows: Tensor, candidates: tuple[Candidate, ...], scale_method: ScaleMethod = "max"
) -> dict[Candidate, np.ndarray]:
    """Each row's squared error under each candidate, with the clip levels the layer will
    use, as float64 arrays."""
    from mixq.nn.weight_quant import quantization_errors

    return {
        c: e.double().cpu().numpy()
        for c, e in quantization_errors(w_rows, candidates, scale_method).items()
    }


def _split_by_scheme(
    group: list[Candidate],
    counts: Mapping[Candidate, int],
    rows: np.ndarray,
    stats: RowStats,
    rule: SchemeRule,
) -> dict[Candidate, np.ndarray]:
    if len(group) == 1:
        return {group[0]: rows}
    if rule == "variance":
        return _split_by_shape(group, counts, rows, np.asarray(stats.shape))
    return _split_by_error(group, counts, rows, stats.errors)


def _split_by_shape(
    group: list[Candidate], counts: Mapping[Candidate, int], rows: np.ndarray, shape: np.ndarray
) -> dict[Candidate, np.ndarray]:
    ordered_rows = rows[np.argsort(shape[rows], kind="stable")]
    ordered_group = sorted(group, key=lambda c: _NEAR_ZERO_DENSITY[c.scheme])
    split, start = {}, 0
    for candidate in ordered_group:
        split[candidate] = ordered_rows[start : start + counts[candidate]]
        start += counts[candidate]
    return split


def _split_by_error(
    group: list[Candidate],
    counts: Mapping[Candidate, int],
    rows: np.ndarray,
    errors: Mapping[Candidate, np.ndarray],
) -> dict[Candidate, np.ndarray]:
    missing = [str(c) for c in group if c not in errors]
    if missing:
        raise RatioError(f"the error rule needs per-row errors for {', '.join(missing)}")
    if len(group) == 2:
        first, second = group
        gain = np.asarray(errors[first])[rows] - np.asarray(errors[second])[rows]
        ordered = rows[np.argsort(gain, kind="stable")]
        return {first: ordered[: counts[first]], second: ordered[counts[first] :]}
    # More than two schemes at one precision: an exact assignment of rows to "slots".
    slot_owner = [c for c in group for _ in range(counts[c])]
    cost = np.stack([np.asarray(errors[c])[rows] for c in slot_owner], axis=1)
    row_ind, slot_ind = linear_sum_assignment(cost)
    split: dict[Candidate, list[int]] = {c: [] for c in group}
    for r, s in zip(row_ind, slot_ind, strict=True):
        split[slot_owner[s]].append(int(rows[r]))
    return {c: np.array(sorted(v), dtype=np.int64) for c, v in split.items()}
