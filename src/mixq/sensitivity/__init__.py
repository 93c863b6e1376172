"""Hessian sensitivity: Hutchinson (or exact Gauss-Newton) traces per layer and per row,
RMSMP's Hessian row rule, and the perturbations the allocation ILPs weigh.

    table = hutchinson_traces(model, loader, HutchinsonConfig(tolerance=0.05))
    table = gauss_newton_traces(model, loader)     # exact, for piecewise-linear nets
    table.save("sensitivity.json")
    qnet = mixq.quantize(model, "rmsmp", row_scorer=HessianRowScorer(table))
    options = perturbation_table(model, table, ["fixed-4", "fixed-8"])
    plan = solve_ilp(options, Budget(eq_bits=4.2))    # mixq.allocation.ilp
    qnet = mixq.quantize(model, "fixed8", plan=plan)
"""

from mixq.sensitivity.config import HutchinsonConfig, HvpMode, ProbeScope, StopRule
from mixq.sensitivity.folded import folded_float_copy
from mixq.sensitivity.gauss_newton import GAP_WARNING, gauss_newton_gap, gauss_newton_traces
from mixq.sensitivity.hutchinson import hutchinson_traces
from mixq.sensitivity.hvp import make_batched_hvp, make_hvp
from mixq.sensitivity.perturbation import (
    HAWQ_CANDIDATES,
    JOINT_CANDIDATES,
    Granularity,
    perturbation_table,
)
from mixq.sensitivity.scorer import HessianRowScorer, hessian_rmsmp_plan
from mixq.sensitivity.table import LayerSensitivity, SensitivityTable, TraceRun

__all__ = [
    "GAP_WARNING",
    "HAWQ_CANDIDATES",
    "JOINT_CANDIDATES",
    "Granularity",
    "HessianRowScorer",
    "HutchinsonConfig",
    "HvpMode",
    "LayerSensitivity",
    "ProbeScope",
    "SensitivityTable",
    "StopRule",
    "TraceRun",
    "folded_float_copy",
    "gauss_newton_gap",
    "gauss_newton_traces",
    "hessian_rmsmp_plan",
    "hutchinson_traces",
    "make_batched_hvp",
    "make_hvp",
    "perturbation_table",
]
