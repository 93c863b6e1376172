"""Costing what was quantised: a plan read back from a quantised model."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import mixq
from mixq.errors import HardwareCostError
from mixq.hw import ComputeCostModel, FpgaCostModel, plan_from_summary
from mixq.shapes import measure_layer_shapes


def test_plan_of_a_quantised_model_costs_what_it_holds() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    ).eval()
    data = [torch.randn(4, 3, 8, 8)]
    recipe = dataclasses.replace(mixq.Recipe.preset("rmsmp"), weight_rounding="nearest")
    qnet = mixq.quantize(net, recipe, calibration_data=data, progress=False)
    summary = mixq.describe(qnet)
    plan = plan_from_summary(summary)
    shapes = measure_layer_shapes(qnet, data[0])
    report = ComputeCostModel().cost(shapes, plan)
    for layer, held in zip(report.layers, summary.layers, strict=True):
        assert layer.rows == held.counts
        assert layer.act_bits == held.act_bits
        assert layer.eq_bits == pytest.approx(held.eq_bits)
    assert report.eq_bits == pytest.approx(summary.eq_bits)
    assert report.layer("2").rows == {"sp2-4": 19, "fixed-4": 11, "fixed-8": 2}
    assert FpgaCostModel("xc7z020").cost(shapes, plan).totals.cycles > 0


def test_inconsistent_summaries_are_refused() -> None:
    short = SimpleNamespace(name="a", rows=4, act_bits=8, counts={"fixed-4": 3})
    with pytest.raises(HardwareCostError, match="do not add up"):
        plan_from_summary(SimpleNamespace(layers=[short]))
    with pytest.raises(HardwareCostError, match="no quantised layer"):
        plan_from_summary(SimpleNamespace(layers=[]))
