"""The comparison drivers' pure logic: aggregation over seeds, the unit store's key, the
ranking check, the Pareto front and the wall-clock budget (no data needed)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from mixq.errors import SensitivityError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import method_compare
from _seeds import (
    BenchmarkSettingsError,
    WallBudget,
    aggregate,
    mean_se,
    pareto_front,
    ranking_change,
    run_units,
)
from _unit_store import UnitStore


def test_mean_and_standard_error_of_known_numbers() -> None:
    mean, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert se == pytest.approx(math.sqrt(1.6666667 / 4), abs=1e-6)  # s = 1.291, n = 4
    assert mean_se([0.7]) == (0.7, None)
    with pytest.raises(BenchmarkSettingsError):
        mean_se([])


def test_aggregate_groups_by_method_and_level_and_averages_fields() -> None:
    units = [
        {
            "method": "msp",
            "eq_bits_target": 4,
            "seed": 1,
            "top1": 0.90,
            "fpga_images_per_s": {"xc7z020": 100.0},
            "top1_per_epoch": [0.5, 0.9],
        },
        {
            "method": "msp",
            "eq_bits_target": 4,
            "seed": 0,
            "top1": 0.80,
            "fpga_images_per_s": {"xc7z020": 200.0},
            "top1_per_epoch": [0.4, 0.8],
        },
        {
            "method": "msp",
            "eq_bits_target": 3,
            "seed": 0,
            "top1": 0.70,
            "fpga_images_per_s": {"xc7z020": 300.0},
            "top1_per_epoch": [0.6, 0.7],
        },
    ]
    rows = aggregate(units, "top1", mean_fields=("fpga_images_per_s", "top1_per_epoch"))
    assert [(r["eq_bits_target"], r["seeds"]) for r in rows] == [(4, [0, 1]), (3, [0])]
    assert rows[0]["top1_mean"] == pytest.approx(0.85)
    assert rows[0]["top1_se"] == pytest.approx(0.05)  # s = 0.0707, / sqrt(2)
    assert rows[0]["top1_per_seed"] == [0.80, 0.90]  # ordered by seed
    assert rows[0]["fpga_images_per_s"] == {"xc7z020": 150.0}
    assert rows[0]["top1_per_epoch"] == [0.45, 0.85]
    assert rows[1]["top1_se"] is None


def test_unit_store_reuses_only_units_with_unchanged_settings(tmp_path: Path) -> None:
    store = UnitStore(tmp_path)
    settings = {"method": "msp", "qat_epochs": 3, "seed": 0}
    store.save("msp-w4-s0", settings, {"top1": 0.81})
    assert store.load("msp-w4-s0", dict(settings)) == {"top1": 0.81}
    changed = {**settings, "qat_epochs": 4}
    assert store.load("msp-w4-s0", changed) is None
    assert store.unit_dir("msp-w4-s0", changed) != store.unit_dir("msp-w4-s0", settings)


def test_unit_store_treats_a_damaged_file_as_unfinished(tmp_path: Path) -> None:
    store = UnitStore(tmp_path)
    settings = {"seed": 1}
    path = store.save("u", settings, {"top1": 0.5})
    path.write_text('{"settings": {"seed": 1}, "row"')  # cut mid-write
    assert store.load("u", settings) is None


def test_driver_key_changes_with_results_settings_but_not_with_output_or_budget() -> None:
    args = method_compare.parse_args(["--seeds", "0", "1", "2"])
    key = method_compare.unit_settings(args, "msp", 4, 0)
    moved = method_compare.parse_args(
        ["--seeds", "0", "1", "2", "--budget-minutes", "5", "--output", "/tmp/x", "--threads", "2"]
    )
    assert method_compare.unit_settings(moved, "msp", 4, 0) == key
    longer = method_compare.parse_args(["--seeds", "0", "1", "2", "--qat-epochs", "9"])
    assert method_compare.unit_settings(longer, "msp", 4, 0) != key
    assert method_compare.unit_settings(args, "msp", 4, 1) != key


def test_driver_refuses_too_few_seeds_for_committed_results() -> None:
    with pytest.raises(BenchmarkSettingsError, match="3 seeds"):
        method_compare.parse_args(["--seeds", "0", "1"])
    with pytest.raises(BenchmarkSettingsError, match="distinct"):
        method_compare.parse_args(["--seeds", "0", "0", "1"])
    assert method_compare.parse_args(["--seeds", "0", "1", "--output", "/tmp/s"]).seeds == [0, 1]


def test_ranking_change_between_the_last_two_epochs() -> None:
    stable = ranking_change({"a": [0.1, 0.8, 0.9], "b": [0.2, 0.7, 0.8]})
    assert stable["changed"] is False and stable["last_epoch"] == ["a", "b"]
    assert ranking_change({"a": [0.8, 0.9], "b": [0.85, 0.95]})["changed"] is False
    assert ranking_change({"a": [0.9, 0.8], "b": [0.85, 0.95]})["changed"] is True
    assert ranking_change({"a": [0.9], "b": [0.8]})["changed"] is None
    assert ranking_change({"a": [0.7, 0.9]})["changed"] is None  # one method: no ranking


def test_only_a_flip_of_a_pair_separated_beyond_noise_counts_against_convergence() -> None:
    means = {"a": [0.80, 0.815], "b": [0.81, 0.812], "c": [0.70, 0.75]}
    # a and b swap, but 0.003 is under 2 x hypot(0.002, 0.002): noise, not a flip
    noisy = ranking_change(means, {"a": 0.002, "b": 0.002, "c": 0.002})
    assert noisy["changed"] is True
    assert noisy["resolved_pairs"] == [["a", "c"], ["b", "c"]]
    assert noisy["resolved_flipped"] == []
    # with ten times smaller errors the same swap is resolved, and it flipped
    sharp = ranking_change(means, {"a": 0.0002, "b": 0.0002, "c": 0.0002})
    assert sharp["resolved_flipped"] == [["a", "b"]]
    # a method without a standard error (one seed) leaves the pairs undecided
    assert "resolved_pairs" not in ranking_change(means, {"a": None, "b": 0.1, "c": 0.1})


def test_pareto_front_on_hand_made_points() -> None:
    # (images/s, top-1): the third is beaten by the first in both; the fourth ties the first
    points = [(100.0, 0.90), (300.0, 0.85), (90.0, 0.80), (100.0, 0.90), (400.0, 0.50)]
    assert pareto_front(points, maximise_x=True) == [0, 1, 3, 4]
    # (KiB, top-1), smaller is better: 120 KiB at 0.88 beats 150 KiB at 0.87
    sizes = [(150.0, 0.87), (120.0, 0.88), (200.0, 0.95)]
    assert pareto_front(sizes, maximise_x=False) == [1, 2]


def test_budget_stops_between_units_and_reports_what_is_left() -> None:
    now = [0.0]
    budget = WallBudget(2.0, lambda: now[0])
    ran: list[int] = []

    def run_one(unit: int) -> dict[str, int]:
        ran.append(unit)
        now[0] += 90.0  # each unit takes 1.5 min, so the budget passes during the second
        return {"unit": unit}

    rows, left = run_units([1, 2, 3, 4], budget, run_one)
    assert ran == [1, 2] and left == 2 and rows == [{"unit": 1}, {"unit": 2}]
    assert run_units([5], WallBudget(None, lambda: 1e9), lambda u: {"u": u}) == ([{"u": 5}], 0)
    with pytest.raises(BenchmarkSettingsError):
        WallBudget(0.0)


def test_row_names_follow_the_benchmark_conventions() -> None:
    assert method_compare.row_name("fixed", 4) == "fixed4"
    assert method_compare.row_name("sp2", 3) == "sp2-3"
    assert method_compare.row_name("rmsmp-hessian", 3) == "rmsmp-hessian"


def test_hessian_and_dfq_settings_key_only_the_methods_that_use_them() -> None:
    args = method_compare.parse_args(["--seeds", "0", "1", "2"])
    more = method_compare.parse_args(["--seeds", "0", "1", "2", "--hessian-probes", "16"])
    assert method_compare.unit_settings(more, "msp", 4, 0) == method_compare.unit_settings(
        args, "msp", 4, 0
    )
    assert method_compare.unit_settings(more, "joint-ilp", 4, 0) != (
        method_compare.unit_settings(args, "joint-ilp", 4, 0)
    )


def test_exact_traces_key_the_hessian_units_and_leave_the_probe_units_keys_alone() -> None:
    args = method_compare.parse_args(["--seeds", "0", "1", "2"])
    explicit = method_compare.parse_args(["--seeds", "0", "1", "2", "--hessian", "hutchinson"])
    exact = method_compare.parse_args(["--seeds", "0", "1", "2", "--hessian", "exact"])
    probe_key = method_compare.unit_settings(args, "hawq-v3-ilp", 3, 0)
    assert "hessian" not in probe_key  # units finished before the option keep their key
    assert method_compare.unit_settings(explicit, "hawq-v3-ilp", 3, 0) == probe_key
    assert method_compare.unit_settings(exact, "hawq-v3-ilp", 3, 0)["hessian"] == "exact"
    assert method_compare.unit_settings(exact, "msp", 3, 0) == (
        method_compare.unit_settings(args, "msp", 3, 0)
    )


def test_too_few_hessian_probes_are_refused_before_any_work() -> None:
    with pytest.raises(SensitivityError, match="two probes"):
        method_compare.parse_args(["--seeds", "0", "1", "2", "--hessian-probes", "1"])
    # a run without Hessian methods does not care
    assert method_compare.parse_args(
        ["--seeds", "0", "1", "2", "--hessian-probes", "1", "--methods", "msp"]
    ).methods == ["msp"]
