"""RMSMP's Hessian rule: rows with the largest trace-weighted error keep the most bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tables import made_up_table
from torch import nn

import mixq
from mixq.errors import SensitivityError
from mixq.ratio import Ratio
from mixq.scoring import perturbation_scorer
from mixq.sensitivity import HessianRowScorer, folded_float_copy, hessian_rmsmp_plan

RMSMP = mixq.Recipe.preset("rmsmp", first_last=None)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 40, 3), nn.BatchNorm2d(40), nn.ReLU(),
        nn.Flatten(), nn.Linear(40 * 2 * 2, 10),
    )  # fmt: skip
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
    return net.eval()


EXAMPLE = torch.randn(1, 3, 6, 6)


def test_score_is_row_trace_per_weight_times_the_low_precision_error() -> None:
    net = _net()
    traces = np.arange(1.0, 41.0)
    table = made_up_table(net, EXAMPLE, {"3": traces})
    w_rows = folded_float_copy(net).get_submodule("3").weight.detach().reshape(40, -1)
    ratio = Ratio.parse("sp2-4:0.6,fixed-4:0.35,fixed-8:0.05")
    scores = HessianRowScorer(table)("3", w_rows, ratio)
    expected = traces / w_rows.shape[1] * perturbation_scorer("3", w_rows, ratio)
    np.testing.assert_allclose(scores, expected)


def test_rows_with_the_largest_traces_keep_eight_bits() -> None:
    net = _net()
    traces = np.full(40, 1e-3)
    traces[[3, 17]] = 1e6  # 5% of 40 rows is 2 rows at fixed-8
    table = made_up_table(net, EXAMPLE, {"3": traces})
    qnet = mixq.quantize(net, RMSMP, row_scorer=HessianRowScorer(table), progress=False)
    rows = qnet[3].assignment.row_candidates()
    assert [i for i, c in enumerate(rows) if str(c) == "fixed-8"] == [3, 17]
    # The variance rule still splits the rest between SP2-4 and Fixed-4 by the ratio.
    assert qnet[3].assignment.counts()[mixq.Candidate.parse("sp2-4")] == 24


def test_the_rmsmp_hessian_plan_is_what_quantize_does_with_the_scorer() -> None:
    net = _net()
    generator = np.random.default_rng(0)
    table = made_up_table(
        net, EXAMPLE, {"0": generator.uniform(size=32), "3": generator.uniform(size=40)}
    )
    plan = hessian_rmsmp_plan(net, table, RMSMP)
    assert plan.method == "rmsmp-hessian" and set(plan.layers) == {"0", "3", "7"}
    direct = mixq.quantize(net, RMSMP, row_scorer=HessianRowScorer(table), progress=False)
    planned = mixq.quantize(net, RMSMP, plan=plan, progress=False)
    for name in plan.layers:
        assert plan.layers[name].assignment == direct.get_submodule(name).assignment
        assert planned.get_submodule(name).assignment == direct.get_submodule(name).assignment


def test_a_table_of_another_model_is_refused() -> None:
    table = made_up_table(_net(), EXAMPLE)
    other = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.ReLU(), nn.Conv2d(32, 40, 1))
    with pytest.raises(SensitivityError, match=r"40x32 weights .* measured 40x288: another"):
        mixq.quantize(other, RMSMP, row_scorer=HessianRowScorer(table), progress=False)
    shifted = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 40, 1))
    with pytest.raises(SensitivityError, match="no layer '2'; it holds: 0, 3, 7"):
        mixq.quantize(shifted, RMSMP, row_scorer=HessianRowScorer(table), progress=False)
