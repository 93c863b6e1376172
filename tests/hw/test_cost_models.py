"""The device-free cost model: weight bits, size and BOPs, worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mixq.assignment import RowAssignment
from mixq.errors import HardwareCostError
from mixq.hw import ComputeCostModel, CostReport, layer_work, uniform_plan
from mixq.plan import LayerPlan, LayerShape, Plan
from mixq.ratio import Ratio

SHAPES = {
    # 3x3 conv, 3 -> 8 channels, 4x4 output from a 6x6 input
    "conv": LayerShape("conv", "conv2d", 8, 27, 16, 108, 128),
    "fc": LayerShape("fc", "linear", 10, 128, 1, 128, 10),
    "head": LayerShape("head", "linear", 2, 10, 1, 10, 2),
}
PLAN = Plan(
    {
        "conv": LayerPlan(Ratio.parse("sp2-4:0.5,fixed-8:0.5")),
        "fc": LayerPlan(Ratio.parse("fixed-4"), act_bits=4),
    }
)


def test_bops_and_size_by_hand() -> None:
    report = ComputeCostModel().cost(SHAPES, PLAN, act_bits=8)
    conv, fc = report.layers
    # conv: 4 SP2-4 rows and 4 Fixed-8 rows of 27 weights, 16 positions, 8-bit input.
    assert conv.rows == {"sp2-4": 4, "fixed-8": 4}
    assert conv.macs == 8 * 27 * 16 == 3456
    assert conv.weight_bits == (4 * 4 + 4 * 8) * 27 == 1296
    assert conv.bops == (4 * 27 * 16 * 4 + 4 * 27 * 16 * 8) * 8 == 165888
    # fc: 10 Fixed-4 rows of 128 weights, 4-bit input.
    assert (fc.macs, fc.weight_bits, fc.bops) == (1280, 5120, 1280 * 4 * 4)
    total = report.totals
    assert (total.macs, total.weight_bits, total.bops) == (4736, 6416, 186368)
    assert total.weight_kib == pytest.approx(6416 / 8 / 1024)
    assert report.eq_bits == pytest.approx(6416 / (8 * 27 + 10 * 128))
    assert (total.cycles, total.latency_s) == (None, None)
    assert report.unplanned == ("head",)


def test_totals_are_the_sums_of_the_layers() -> None:
    rng = np.random.default_rng(0)
    shapes = {
        f"l{i}": LayerShape(f"l{i}", "conv2d", int(r), int(m), int(p), 1, 1)
        for i, (r, m, p) in enumerate(rng.integers(1, 300, size=(12, 3)))
    }
    for ratio in ("fixed-4", "sp2-4:0.6,fixed-4:0.35,fixed-8:0.05", "pot-3:0.3,fixed-6:0.7"):
        report = ComputeCostModel().cost(shapes, uniform_plan(shapes, ratio), act_bits=6)
        for field in ("macs", "weight_bits", "bops"):
            assert getattr(report.totals, field) == sum(getattr(x, field) for x in report.layers)


def test_exact_assignments_are_costed_row_by_row() -> None:
    rows = RowAssignment.from_rows(["fixed-8"] * 3 + ["sp2-4"] * 5)
    plan = Plan({"conv": LayerPlan(Ratio.parse("sp2-4:0.5,fixed-8:0.5"), assignment=rows)})
    (conv,) = ComputeCostModel().cost(SHAPES, plan).layers
    assert conv.rows == {"fixed-8": 3, "sp2-4": 5}
    assert conv.weight_bits == (3 * 8 + 5 * 4) * 27


def test_bad_plans_name_the_problem() -> None:
    with pytest.raises(HardwareCostError, match="the shapes lack: nowhere"):
        layer_work(SHAPES, Plan({"nowhere": LayerPlan(Ratio.parse("fixed-4"))}))
    with pytest.raises(HardwareCostError, match="layer fc: activation bits 0"):
        layer_work(SHAPES, Plan({"fc": LayerPlan(Ratio.parse("fixed-4"), act_bits=0)}))
    wrong = RowAssignment.uniform("fixed-4", 3)
    plan = Plan({"fc": LayerPlan(Ratio.parse("fixed-4"), assignment=wrong)})
    with pytest.raises(HardwareCostError, match="assigns 3 rows, the layer has 10"):
        layer_work(SHAPES, plan)


def test_report_round_trip(tmp_path: Path) -> None:
    report = ComputeCostModel().cost(SHAPES, PLAN, model="toy")
    report.save(tmp_path / "r.json")
    assert CostReport.load(tmp_path / "r.json") == report
    (tmp_path / "bad.json").write_text('{"model": "x"}')
    with pytest.raises(HardwareCostError, match="malformed cost report"):
        CostReport.load(tmp_path / "bad.json")
