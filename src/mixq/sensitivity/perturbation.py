"""Perturbations ``Omega`` of every (layer, candidate): the torch side of the ILPs.

``granularity="layer"`` is HAWQ-V3's ``Omega = trace / n * ||Q(W) - W||^2`` with the
layer's mean trace. ``granularity="row"`` weighs each row's error by its own trace,
``Omega = sum_r trace_r / n_r * ||Q_r(w_r) - w_r||^2``, where ``Q_r`` is the candidate the
row takes under the ratio's row assignment (RMSMP's Hessian rule for precision, the scheme
rule for the scheme). Errors are measured on the BN-folded weights with the clip levels a
recipe's ``scale_method`` would give, and every mixed candidate carries the exact row
assignment it was costed with, so the plan applies exactly what was weighed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from torch import Tensor, nn

from mixq.allocation.options import CandidateOption, LayerOptions, PerturbationTable
from mixq.allocation.rows import SchemeRule, assign_layer_rows, candidate_row_errors
from mixq.errors import SensitivityError
from mixq.ratio import Ratio
from mixq.scale_init import ScaleMethod
from mixq.schemes import Candidate
from mixq.sensitivity.folded import folded_float_copy
from mixq.sensitivity.scorer import HessianRowScorer
from mixq.sensitivity.table import LayerSensitivity, SensitivityTable

Granularity = Literal["layer", "row"]

HAWQ_CANDIDATES: tuple[str, ...] = ("fixed-4", "fixed-8")
JOINT_CANDIDATES: tuple[str, ...] = (
    "fixed-8",
    "fixed-4",
    "sp2-4",
    "sp2-4:0.5,fixed-4:0.5",
    "sp2-4:0.6,fixed-4:0.35,fixed-8:0.05",
    "sp2-4:0.45,fixed-4:0.45,fixed-8:0.1",
)


def perturbation_table(
    model: nn.Module,
    table: SensitivityTable,
    candidates: Sequence[Ratio | str] = HAWQ_CANDIDATES,
    *,
    overrides: Mapping[str, Sequence[Ratio | str]] | None = None,
    layers: Sequence[str] | None = None,
    granularity: Granularity = "layer",
    scale_method: ScaleMethod = "max",
    scheme_rule: SchemeRule = "variance",
    fold_bn: bool = True,
) -> PerturbationTable:
    """Every layer's candidates with their perturbations, for :func:`mixq.allocation.ilp.solve_ilp`.

    Args:
        model: the float model the table was measured on.
        table: its Hessian traces.
        candidates: what every layer may take (ratios or single scheme-and-bits).
        overrides: other candidates for the layers named (say, ``fixed-8`` only for the first).
        layers: the layers to allocate (default: every layer of the table).
        granularity: ``"layer"`` (HAWQ-V3) or ``"row"`` (the joint ILP).
        scale_method: the clip levels errors are measured with (a recipe's ``scale_method``).
        scheme_rule: how rows of equal bits pick a scheme in mixed candidates.
        fold_bn: as the table was measured (and as the recipe converts).
    """
    if granularity not in ("layer", "row"):
        raise SensitivityError(f"granularity must be 'layer' or 'row', got {granularity!r}")
    names = list(layers) if layers is not None else list(table.layers)
    overrides = dict(overrides or {})
    stray = sorted(set(overrides) - set(names))
    if stray:
        raise SensitivityError(f"overrides name layers that are not allocated: {stray}")
    folded = folded_float_copy(model, fold_bn=fold_bn)
    modules = dict(folded.named_modules())
    scorer = HessianRowScorer(table)
    options: dict[str, LayerOptions] = {}
    for name in names:
        sensitivity = table.layer(name)
        if name not in modules or not isinstance(modules[name], nn.Conv2d | nn.Linear):
            raise SensitivityError(f"the model has no Conv2d/Linear layer named {name!r}")
        weight = modules[name].weight.detach()
        w_rows = weight.reshape(weight.shape[0], -1)
        ratios = [Ratio.parse(r) for r in overrides.get(name, candidates)]
        scores = _CachedScores(name, w_rows, scorer)
        costed = tuple(
            _option(w_rows, r, sensitivity, scores, granularity, scale_method, scheme_rule)
            for r in ratios
        )
        options[name] = LayerOptions(sensitivity.shape, costed)
    return PerturbationTable(options, granularity, scale_method)


class _CachedScores:
    """The Hessian rule's row scores of one layer; they depend only on the ratio's
    lowest-bit candidates, which most mixed candidates share."""

    def __init__(self, name: str, w_rows: Tensor, scorer: HessianRowScorer) -> None:
        self.name, self.w_rows, self.scorer = name, w_rows, scorer
        self._scores: dict[tuple[Candidate, ...], np.ndarray] = {}

    def __call__(self, ratio: Ratio) -> np.ndarray:
        lowest = min(c.bits for c in ratio.candidates)
        key = tuple(sorted(c for c in ratio.candidates if c.bits == lowest))
        if key not in self._scores:
            self._scores[key] = self.scorer(self.name, self.w_rows, ratio)
        return self._scores[key]


def _option(
    w_rows: Tensor,
    ratio: Ratio,
    sensitivity: LayerSensitivity,
    scores: _CachedScores,
    granularity: Granularity,
    scale_method: ScaleMethod,
    scheme_rule: SchemeRule,
) -> CandidateOption:
    errors = candidate_row_errors(w_rows, ratio.candidates, scale_method)
    assignment = None
    if len(ratio.candidates) == 1:
        row_errors = errors[ratio.candidates[0]]
    else:
        assignment = assign_layer_rows(
            w_rows, ratio, lambda: scores(ratio), scheme_rule, scale_method, errors
        )
        per_candidate = np.stack([errors[c] for c in assignment.candidates])  # (C, rows)
        row_errors = per_candidate[assignment.codes, np.arange(assignment.rows)]
    if granularity == "layer":
        omega = sensitivity.mean_trace * float(row_errors.sum())
    else:
        omega = float((sensitivity.row_mean_traces * row_errors).sum())
    return CandidateOption(ratio, omega, assignment)
