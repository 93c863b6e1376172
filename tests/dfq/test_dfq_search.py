"""DFQ search: bits move under the size penalty, and the rounded plan meets its target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mixq
from mixq.dfq import DfqConfig, dfq_search
from mixq.errors import AllocationError
from mixq.shapes import measure_layer_shapes


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12 * 4 * 4, 5),
    ).eval()  # fmt: skip


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(16, 3, 8, 8, generator=generator),
            torch.randint(0, 5, (16,), generator=generator),
        )
        for _ in range(3)
    ]


@pytest.mark.parametrize("granularity", ["row", "layer"])
def test_the_rounded_plan_meets_its_size_target(granularity: str) -> None:
    net = _net()
    config = DfqConfig(target_eq_bits=4.5, granularity=granularity, steps=15, bits_lr=0.3)
    result = dfq_search(net, _data(), config, progress=False)
    plan = result.plan
    assert plan.method == "dfq" and list(plan.layers) == ["0", "3", "6"]
    qnet = mixq.quantize(net, "fixed8", plan=plan, progress=False)
    eq_bits = mixq.describe(qnet).eq_bits
    assert eq_bits <= 4.5
    assert eq_bits == pytest.approx(plan.metadata["eq_bits"])
    # The penalty pulled the real bit widths down from 8 towards the target.
    assert result.history[-1].cost_ratio < result.history[0].cost_ratio
    assert all(bits.max() < 8 for bits in result.real_bits.values())
    if granularity == "layer":
        assert all(len(set(lp.assignment.codes.tolist())) == 1 for lp in plan.layers.values())


def test_a_bops_target_is_met_and_only_the_chosen_layers_are_planned() -> None:
    net = _net()
    config = DfqConfig(target_bops=2.0e6, steps=10, bits_lr=0.3)
    result = dfq_search(net, _data(), config, layers=["3", "6"], progress=False)
    assert set(result.plan.layers) == {"3", "6"}
    assert result.plan.metadata["bops"] <= 2.0e6
    shapes = measure_layer_shapes(net, _data()[0])
    bops = sum(
        float(lp.assignment.bits_per_row().sum()) * shapes[n].macs_per_row * shapes[n].positions * 8
        for n, lp in result.plan.layers.items()
    )
    assert bops == pytest.approx(result.plan.metadata["bops"])
    assert np.isfinite(result.plan.metadata["final_task_loss"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "exactly one"),
        ({"target_eq_bits": 4.0, "target_bops": 1.0}, "exactly one"),
        ({"target_eq_bits": -1.0}, "positive"),
        ({"target_eq_bits": 4.0, "scheme": "sp2", "min_bits": 2}, "sp2 supports"),
        ({"target_eq_bits": 4.0, "steps": -1}, "steps"),
    ],
)
def test_bad_configs_raise(settings: dict, message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        DfqConfig(**settings)


def test_an_impossible_target_and_unknown_layers_raise() -> None:
    with pytest.raises(mixq.errors.InfeasibleBudgetError):
        dfq_search(_net(), _data(), DfqConfig(target_eq_bits=1.5, steps=1), progress=False)
    with pytest.raises(AllocationError, match=r"unknown: \['9'\]"):
        dfq_search(_net(), _data(), DfqConfig(target_eq_bits=4.0), layers=["9"], progress=False)


def test_data_that_is_not_pairs_or_runs_out_raises() -> None:
    config = DfqConfig(target_eq_bits=4.0, steps=5)
    images = [x for x, _ in _data()]
    with pytest.raises(AllocationError, match="pair of tensors, got a float32 tensor"):
        dfq_search(_net(), images, config, progress=False)
    with pytest.raises(AllocationError, match="ran out after 3 batches; pass a re-iterable"):
        dfq_search(_net(), iter(_data()), config, progress=False)
    with pytest.raises(AllocationError, match="yielded no batches"):
        dfq_search(_net(), [], config, progress=False)
