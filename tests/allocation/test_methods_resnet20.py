"""Every allocation method's plan converts a ResNet-20 at the equivalent bits it was asked for."""

from __future__ import annotations

import pytest
import torch

import mixq
from mixq.allocation.budget import Budget
from mixq.allocation.ilp import solve_ilp
from mixq.dfq import DfqConfig, dfq_search
from mixq.models import resnet20
from mixq.plan import Plan
from mixq.sensitivity import (
    HAWQ_CANDIDATES,
    JOINT_CANDIDATES,
    HutchinsonConfig,
    SensitivityTable,
    hessian_rmsmp_plan,
    hutchinson_traces,
    perturbation_table,
)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return resnet20().eval()


@pytest.fixture(scope="module")
def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(4, 3, 32, 32, generator=generator),
            torch.randint(0, 10, (4,), generator=generator),
        )
        for _ in range(2)
    ]


@pytest.fixture(scope="module")
def table(model, batches) -> SensitivityTable:
    config = HutchinsonConfig(min_probes=2, max_probes=2, probe_scope="model")
    return hutchinson_traces(model, batches, config, progress=False)


def _converted_eq_bits(model: torch.nn.Module, plan: Plan) -> float:
    qnet = mixq.quantize(model, "fixed8", plan=plan, progress=False)
    summary = mixq.describe(qnet)
    assert [layer.name for layer in summary.layers] == list(plan.layers)
    for layer in summary.layers:
        assignment = plan.layers[layer.name].assignment
        if assignment is not None:
            assert qnet.get_submodule(layer.name).assignment == assignment
    return summary.eq_bits


def test_hawq_v3_plan(model, table) -> None:
    options = perturbation_table(model, table, HAWQ_CANDIDATES)
    plan = solve_ilp(options, Budget(eq_bits=4.5), method="hawq-v3-ilp")
    eq_bits = _converted_eq_bits(model, plan)
    assert 4.3 <= eq_bits <= 4.5
    assert eq_bits == pytest.approx(plan.metadata["used"]["eq_bits"])
    assert eq_bits == pytest.approx(plan.eq_bits(table.shapes))


def test_joint_ilp_plan(model, table) -> None:
    options = perturbation_table(model, table, JOINT_CANDIDATES, granularity="row")
    plan = solve_ilp(options, Budget(eq_bits=4.2), method="joint-ilp")
    eq_bits = _converted_eq_bits(model, plan)
    assert 4.1 <= eq_bits <= 4.2
    assert eq_bits == pytest.approx(plan.metadata["used"]["eq_bits"])


def test_rmsmp_hessian_plan(model, table) -> None:
    plan = hessian_rmsmp_plan(model, table, mixq.Recipe.preset("rmsmp", first_last=None))
    eq_bits = _converted_eq_bits(model, plan)
    # The ratio's 4.2 bits, with every layer's row counts rounded (ties to more bits).
    assert 4.2 <= eq_bits <= 4.35
    assert eq_bits == pytest.approx(plan.eq_bits(table.shapes))


def test_dfq_plan(model, batches) -> None:
    config = DfqConfig(target_eq_bits=4.2, steps=2, bits_lr=0.5, calibration_batches=1)
    result = dfq_search(model, batches, config, progress=False)
    eq_bits = _converted_eq_bits(model, result.plan)
    assert 4.15 <= eq_bits <= 4.2
    assert eq_bits == pytest.approx(result.plan.metadata["eq_bits"])


def test_joint_ilp_fpga_planner_meets_fixed4_throughput(model, table) -> None:
    # The benchmark planner: the joint ILP at Fixed-4's modelled images/s on XC7Z045.
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from _planners import TARGET_SHADE, fixed_images_per_s, make_plan

    from mixq.hw import hardware_point
    from mixq.shapes import measure_layer_shapes

    plan = make_plan("joint-ilp-fpga", model, 4, 4, table=table, train_data=[], dfq_steps=0, seed=0)
    assert plan is not None and plan.method == "joint-ilp-fpga"
    shapes = measure_layer_shapes(model, torch.zeros(1, 3, 32, 32))
    target = fixed_images_per_s(shapes, 4, 4)
    images = hardware_point(plan, shapes, devices=["xc7z045"]).images_per_s["xc7z045"]
    assert images >= target * (1 - TARGET_SHADE)
    # Arrays sized to the plan run it at least as fast as the budget's fixed design.
    assert images >= plan.metadata["fpga"]["modelled_images_per_s"] * (1 - 1e-12)
    names = list(plan.layers)
    assert {str(plan.layers[n].ratio) for n in (names[0], names[-1])} == {"fixed-8:1"}
    _converted_eq_bits(model, plan)
