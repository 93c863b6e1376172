"""Perturbations of (layer, candidate): HAWQ's Omega on the weights the quantiser sees."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from _tables import made_up_table
from torch import nn

import mixq
from mixq.errors import SensitivityError
from mixq.sensitivity import JOINT_CANDIDATES, perturbation_table


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )  # fmt: skip
    with torch.no_grad():
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


EXAMPLE = torch.randn(1, 3, 6, 6)


def _quantised_error(net: nn.Module, name: str, ratio: str) -> float:
    """||Q(W) - W||^2 of the layer as mixq.quantize builds it (max-abs clips, nearest)."""
    recipe = dataclasses.replace(
        mixq.Recipe.preset("fixed8", first_last=None),
        default=mixq.LayerConfig(mixq.Ratio.parse(ratio)),
        weight_rounding="nearest",
    )
    layer = mixq.quantize(net, recipe, progress=False).get_submodule(name)
    w_rows = layer.weight_rows().detach()
    return float(layer.weight_quant.row_errors(w_rows).sum())


def test_layer_omega_is_mean_trace_times_the_quantiser_error() -> None:
    net = _net()
    table = made_up_table(net, EXAMPLE, {"0": np.linspace(1, 4, 16)})
    options = perturbation_table(net, table, ["fixed-4", "fixed-8"])
    assert options.granularity == "layer" and list(options.layers) == ["0", "4"]
    for name in ("0", "4"):
        layer = options.layers[name]
        assert layer.labels == ("fixed-4:1", "fixed-8:1")
        for option in layer.options:
            expected = table.layer(name).mean_trace * _quantised_error(net, name, option.label)
            assert option.omega == pytest.approx(expected, rel=1e-5)
            assert option.assignment is None
        assert layer.options[0].omega > layer.options[1].omega > 0


def test_row_omega_weighs_each_row_and_carries_the_assignment() -> None:
    net = _net()
    traces = np.zeros(16)
    traces[5] = 16.0
    table = made_up_table(net, EXAMPLE, {"0": traces})
    options = perturbation_table(net, table, JOINT_CANDIDATES, granularity="row", layers=["0"])
    mixed = options.layers["0"].options[JOINT_CANDIDATES.index("sp2-4:0.5,fixed-4:0.5")]
    assert mixed.assignment is not None and mixed.assignment.rows == 16
    # Only row 5 has a trace: Omega is its trace per weight times its own error.
    qnet = mixq.quantize(
        net,
        "fixed8",
        plan=mixq.plan.Plan({"0": mixq.plan.LayerPlan(mixed.ratio, 8, mixed.assignment)}),
        progress=False,
    )
    layer = qnet.get_submodule("0")
    assert layer.assignment == mixed.assignment
    row_error = float(layer.weight_quant.row_errors(layer.weight_rows().detach())[5])
    assert mixed.omega == pytest.approx(16.0 / 27 * row_error, rel=1e-5)
    # The most sensitive row takes fixed-8 in every candidate that offers it.
    rmsmp = options.layers["0"].options[
        JOINT_CANDIDATES.index("sp2-4:0.6,fixed-4:0.35,fixed-8:0.05")
    ]
    assert str(rmsmp.assignment.row_candidates()[5]) == "fixed-8"


def test_overrides_give_some_layers_other_candidates() -> None:
    net = _net()
    table = made_up_table(net, EXAMPLE)
    options = perturbation_table(net, table, ["fixed-4", "fixed-8"], overrides={"0": ["fixed-8"]})
    assert options.layers["0"].labels == ("fixed-8:1",)
    with pytest.raises(SensitivityError, match=r"not allocated: \['9'\]"):
        perturbation_table(net, table, overrides={"9": ["fixed-8"]})


def test_bad_arguments_raise() -> None:
    net = _net()
    table = made_up_table(net, EXAMPLE)
    with pytest.raises(SensitivityError, match="granularity"):
        perturbation_table(net, table, granularity="channel")
    with pytest.raises(SensitivityError, match="no layer '2'"):
        perturbation_table(net, table, layers=["2"])
