"""The ILP's typed inputs: perturbation tables, cost tables and budgets, and their JSON."""

from __future__ import annotations

import numpy as np
import pytest

from mixq.allocation.budget import Budget
from mixq.allocation.costs import CostTable
from mixq.allocation.options import (
    CandidateOption,
    LayerOptions,
    PerturbationTable,
    candidate_label,
)
from mixq.assignment import RowAssignment
from mixq.errors import AllocationError
from mixq.plan import LayerShape
from mixq.ratio import Ratio

SHAPE = LayerShape("conv", "conv2d", rows=4, macs_per_row=9, positions=16, input_elements=1,
                   output_elements=1)  # fmt: skip


def test_weight_bits_and_bops_count_rows_exactly() -> None:
    mixed = Ratio.parse("sp2-4:0.6,fixed-4:0.35,fixed-8:0.05")  # 4 rows: 3/1/0
    assignment = RowAssignment.from_rows(["fixed-8", "fixed-8", "sp2-4", "sp2-4"])
    layer = LayerOptions(
        SHAPE,
        (
            CandidateOption(Ratio.parse("fixed-8"), 0.1),
            CandidateOption(mixed, 0.5),
            CandidateOption(Ratio.parse("sp2-4:0.5,fixed-8:0.5"), 0.3, assignment),
        ),
    )
    assert list(mixed.row_counts(4).values()) == [3, 1, 0]
    assert layer.weight_bits().tolist() == [4 * 8 * 9, 4 * 4 * 9, (8 + 8 + 4 + 4) * 9]
    np.testing.assert_array_equal(layer.bops(4), layer.weight_bits() * 16 * 4)


def test_a_perturbation_table_round_trips_with_assignments(tmp_path) -> None:
    assignment = RowAssignment.from_rows(["sp2-4", "fixed-4", "sp2-4", "sp2-4"])
    layer = LayerOptions(
        SHAPE,
        (
            CandidateOption(Ratio.parse("fixed-4"), 1.5),
            CandidateOption(Ratio.parse("sp2-4:0.75,fixed-4:0.25"), 0.25, assignment),
        ),
    )
    table = PerturbationTable({"conv": layer}, granularity="row", scale_method="mse")
    table.save(tmp_path / "p.json")
    assert PerturbationTable.load(tmp_path / "p.json") == table


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: LayerOptions(SHAPE, ()), "no candidates"),
        (
            lambda: LayerOptions(
                SHAPE,
                (
                    CandidateOption(Ratio.parse("fixed-4"), 1.0),
                    CandidateOption(Ratio.parse("fixed-4:1.0"), 2.0),
                ),
            ),
            "twice",
        ),
        (lambda: CandidateOption(Ratio.parse("fixed-4"), float("nan")), "finite"),
        (
            lambda: CandidateOption(Ratio.parse("fixed-4"), 1.0, RowAssignment.uniform("sp2-4", 4)),
            "other candidates",
        ),
        (
            lambda: LayerOptions(
                SHAPE,
                (
                    CandidateOption(
                        Ratio.parse("fixed-4"), 1.0, RowAssignment.uniform("fixed-4", 3)
                    ),
                ),
            ),
            "assigns 3 rows",
        ),
        (lambda: PerturbationTable({}), "at least one layer"),
        (
            lambda: PerturbationTable(
                {"other": LayerOptions(SHAPE, (CandidateOption(Ratio.parse("fixed-4"), 1.0),))}
            ),
            "holds the shape",
        ),
        (lambda: candidate_label("fixed-9"), "bad candidate"),
    ],
)
def test_malformed_options_raise(build, message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        build()


def test_cost_tables_normalise_keys_and_round_trip(tmp_path) -> None:
    table = CostTable(
        "dsp", {"conv": {"fixed-4:1.0": 3, "sp2-4:0.5, fixed-4:0.5": 1.5}}, unit="DSP"
    )
    assert table.cost("conv", "fixed-4") == 3.0
    assert table.cost("conv", "sp2-4:0.5,fixed-4:0.5") == 1.5
    table.save(tmp_path / "dsp.json")
    assert CostTable.load(tmp_path / "dsp.json") == table
    with pytest.raises(AllocationError, match="must be finite and >= 0"):
        CostTable("dsp", {"conv": {"fixed-4": -1}})
    with pytest.raises(AllocationError, match="not a number"):
        CostTable("dsp", {"conv": {"fixed-4": "many"}})
    (tmp_path / "bad.json").write_text('{"format": "x"}')
    with pytest.raises(AllocationError, match="not a cost table"):
        CostTable.load(tmp_path / "bad.json")


def test_budgets_reject_bad_limits() -> None:
    assert Budget(weight_bits=10, bops=20).limits() == {"weight_bits": 10, "bops": 20}
    with pytest.raises(AllocationError, match="finite and >= 0"):
        Budget(eq_bits=-1.0)
    with pytest.raises(AllocationError, match="must be a number"):
        Budget(costs={"latency": "fast"})
    with pytest.raises(AllocationError, match="cannot be named"):
        Budget(costs={"bops": 1.0})
