"""The FPGA throughput budget of the ILP: the chosen plan meets the target as mixq.hw costs
it on its own, an unreachable target is refused, and brute force finds the same optimum."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from mixq.allocation.budget import Budget
from mixq.allocation.fpga_budget import CYCLES, FpgaThroughput, throughput_costs
from mixq.allocation.ilp import solve_ilp
from mixq.allocation.options import CandidateOption, LayerOptions, PerturbationTable
from mixq.errors import AllocationError, InfeasibleBudgetError
from mixq.hw import FpgaCostModel, hardware_point
from mixq.hw.option_cycles import plan_on_design
from mixq.hw.report import FpgaDesign
from mixq.plan import LayerPlan, LayerShape, Plan
from mixq.ratio import Ratio

ACT = 4
LABELS = ("fixed-8", "fixed-4", "sp2-4", "sp2-4:0.5,fixed-4:0.5")


def _conv(name: str, rows: int, inputs: int, side: int) -> LayerShape:
    # A 3x3 conv. On XC7Z020 the 256-row layers fit in block RAM at 4 bits, not at 8, and
    # at 2x2 outputs streaming their weights takes longer than their compute.
    return LayerShape(
        name, "conv2d", rows, inputs * 9, side * side, inputs * side * side, rows * side * side
    )


SHAPES = {
    "a": _conv("a", 64, 64, 16),
    "b": _conv("b", 256, 256, 2),
    "c": _conv("c", 256, 256, 2),
    "d": _conv("d", 64, 64, 4),
}


def _table(
    rng: np.random.Generator, labels_per_layer: dict[str, tuple[str, ...]]
) -> PerturbationTable:
    layers = {}
    for name, labels in labels_per_layer.items():
        # More bits: less perturbation (plus noise), so speed and accuracy pull apart.
        options = tuple(
            CandidateOption(
                Ratio.parse(label),
                float(rng.uniform(0.5, 1.5) / Ratio.parse(label).eq_bits ** 2),
            )
            for label in labels
        )
        layers[name] = LayerOptions(SHAPES[name], options)
    return PerturbationTable(layers, granularity="row")


def _plan(table: PerturbationTable, choice: tuple[int, ...]) -> Plan:
    layers = {}
    for (name, layer), index in zip(table.layers.items(), choice, strict=True):
        option = layer.options[index]
        layers[name] = LayerPlan(option.ratio, ACT, option.assignment)
    return Plan(layers)


@functools.cache
def _model(device: str) -> FpgaCostModel:
    return FpgaCostModel(device)


def _cycles_on_fixed_design(table: PerturbationTable, spec: FpgaThroughput, plan: Plan) -> int:
    """mixq.hw's own cost of ``plan`` on the budget's design (not the ILP's sums)."""
    design = throughput_costs(spec, table, dict.fromkeys(table.layers, ACT)).design
    return _cycles_on(design, spec.device, plan)


def _cycles_on(design: FpgaDesign, device: str, plan: Plan) -> int:
    report = plan_on_design(_model(device), design, SHAPES, plan, act_bits=ACT)
    cycles = report.totals.cycles
    assert cycles is not None
    return cycles


def _every_plan(table: PerturbationTable, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Every plan's total omega and its cycles, as mixq.hw costs it on the budget's design."""
    spec = FpgaThroughput(device, 1.0)
    design = throughput_costs(spec, table, dict.fromkeys(table.layers, ACT)).design
    omegas, cycles = [], []
    ranges = [range(len(layer.options)) for layer in table.layers.values()]
    for choice in itertools.product(*ranges):
        cycles.append(_cycles_on(design, device, _plan(table, choice)))
        omegas.append(
            sum(layer.omegas()[i] for layer, i in zip(table.layers.values(), choice, strict=True))
        )
    return np.array(omegas), np.array(cycles)


def _clock(device: str) -> float:
    return _model(device).device.clock_mhz * 1e6


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("device", ["xc7z020", "xc7z045"])
def test_ilp_under_a_throughput_target_matches_brute_force(seed: int, device: str) -> None:
    rng = np.random.default_rng(seed)
    labels = {name: tuple(rng.choice(LABELS, size=3, replace=False)) for name in SHAPES}
    table = _table(rng, labels)
    omegas, all_cycles = _every_plan(table, device)
    clock = _clock(device)
    for share in (0.1, 0.5, 0.9):
        # Targets between the slowest and the fastest plan's images/s.
        slow, fast = clock / all_cycles.max(), clock / all_cycles.min()
        spec = FpgaThroughput(device, slow + share * (fast - slow))
        expected = float(omegas[clock / all_cycles >= spec.images_per_s].min())
        plan = solve_ilp(table, Budget(fpga=spec), act_bits=ACT, method="joint-ilp")
        assert plan.metadata["objective"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        cycles = _cycles_on_fixed_design(table, spec, plan)
        assert clock / cycles >= spec.images_per_s
        assert cycles <= plan.metadata["fpga"]["limit_cycles"]
        assert plan.metadata["fpga"]["cycles"] == cycles


def test_both_memory_cases_are_taken_on_the_small_device() -> None:
    # On XC7Z020, b and c at 8 bits do not fit in block RAM: streamed weights. At a loose
    # target the most precise plan streams; at a tight one the plan must fit on chip.
    table = _table(np.random.default_rng(0), dict.fromkeys(SHAPES, LABELS))
    loose = solve_ilp(table, Budget(fpga=FpgaThroughput("xc7z020", 1.0)), act_bits=ACT)
    assert loose.metadata["fpga"]["weights_on_chip"] is False
    assert all(str(layer.ratio) == "fixed-8:1" for layer in loose.layers.values())
    _, all_cycles = _every_plan(table, "xc7z020")
    fastest = _clock("xc7z020") / all_cycles.min()
    tight = solve_ilp(table, Budget(fpga=FpgaThroughput("xc7z020", 0.99 * fastest)), act_bits=ACT)
    assert tight.metadata["fpga"]["weights_on_chip"] is True


def test_the_plan_meets_the_target_as_hardware_point_costs_it() -> None:
    # Layers a and d fixed to fixed-8 and the MSP mix: the plan uses every candidate, so
    # hardware_point (which sizes the arrays to the plan) builds the budget's very design.
    rng = np.random.default_rng(3)
    labels = {"a": ("fixed-8",), "b": LABELS, "c": LABELS, "d": ("sp2-4:0.5,fixed-4:0.5",)}
    table = _table(rng, labels)
    for target in (2000.0, 4000.0, 6000.0):
        spec = FpgaThroughput("xc7z045", target)
        plan = solve_ilp(table, Budget(fpga=spec), act_bits=ACT)
        point = hardware_point(plan, SHAPES, devices=["xc7z045"], act_bits=ACT)
        assert point.images_per_s["xc7z045"] >= target
        assert point.images_per_s["xc7z045"] == pytest.approx(
            plan.metadata["fpga"]["modelled_images_per_s"], rel=1e-12
        )


def test_an_unreachable_target_is_refused_with_the_fastest_figure() -> None:
    table = _table(np.random.default_rng(1), dict.fromkeys(SHAPES, LABELS))
    _, all_cycles = _every_plan(table, "xc7z045")
    fastest = _clock("xc7z045") / all_cycles.min()
    with pytest.raises(InfeasibleBudgetError, match="out of reach on xc7z045") as info:
        solve_ilp(table, Budget(fpga=FpgaThroughput("xc7z045", fastest * 1.01)), act_bits=ACT)
    assert info.value.minimums[CYCLES] == all_cycles.min()
    plan = solve_ilp(table, Budget(fpga=FpgaThroughput("xc7z045", fastest)), act_bits=ACT)
    assert plan.metadata["fpga"]["cycles"] == all_cycles.min()


def test_a_target_and_a_size_that_exclude_each_other_are_refused() -> None:
    # All Fixed-3 is the only plan at 3 bits; the MSP mix (DSP and LUT rows at once) is
    # faster; so the fastest plan's speed at 3 bits admits no plan, though each alone does.
    table = _table(np.random.default_rng(2), dict.fromkeys(SHAPES, ("fixed-3", LABELS[3])))
    _, all_cycles = _every_plan(table, "xc7z045")
    fastest = _clock("xc7z045") / all_cycles.min()
    all_fixed3 = _plan(table, (0, 0, 0, 0))
    assert _cycles_on_fixed_design(table, FpgaThroughput("xc7z045", 1.0), all_fixed3) > min(
        all_cycles
    )
    with pytest.raises(InfeasibleBudgetError, match="together admit no plan"):
        solve_ilp(table, Budget(eq_bits=3.0, fpga=FpgaThroughput("xc7z045", fastest)), act_bits=ACT)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("xc7z045", "DEVICE:IMAGES_PER_S"),
        ("xc7z045:fast", "DEVICE:IMAGES_PER_S"),
        (":100", "DEVICE:IMAGES_PER_S"),
        ("xc7z045:0", "finite and > 0"),
        ("xc7z045:inf", "DEVICE:IMAGES_PER_S"),
    ],
)
def test_bad_throughput_budgets_are_typed_errors(text: str, message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        FpgaThroughput.parse(text)


def test_an_unknown_device_and_float_activations_are_refused_before_solving() -> None:
    table = _table(np.random.default_rng(0), dict.fromkeys(SHAPES, LABELS))
    with pytest.raises(AllocationError, match="unknown device 'xc9'"):
        solve_ilp(table, Budget(fpga=FpgaThroughput("xc9", 10.0)), act_bits=ACT)
    with pytest.raises(AllocationError, match="act_bits >= 1"):
        solve_ilp(table, Budget(fpga=FpgaThroughput("xc7z045", 10.0)), act_bits=0)
    assert Budget(fpga=FpgaThroughput("xc7z045", 10.0)).to_dict()["fpga"]["device"] == "xc7z045"


def test_the_cli_reads_a_throughput_budget() -> None:
    from mixq.cli.allocate import parse_budget

    budget = parse_budget(["eq-bits=4.2", "fpga-images-per-s=xc7z045:5000"])
    assert budget.eq_bits == 4.2 and budget.fpga == FpgaThroughput("xc7z045", 5000.0)
    with pytest.raises(AllocationError, match="DEVICE:IMAGES_PER_S"):
        parse_budget(["fpga-images-per-s=5000"])


def test_the_cli_prints_the_plans_modelled_throughput(tmp_path) -> None:
    from mixq.cli.allocate import format_plan

    table = _table(np.random.default_rng(0), dict.fromkeys(SHAPES, LABELS))
    plan = solve_ilp(table, Budget(fpga=FpgaThroughput("xc7z045", 3000.0)), act_bits=ACT)
    last = format_plan(plan, table)[-1]
    images = plan.metadata["fpga"]["modelled_images_per_s"]
    assert last.startswith(f"xc7z045: {images:.6g} images/s modelled (target 3000;")
    plan.save(tmp_path / "plan.json")  # the metadata, design included, is plain JSON
    assert (
        Plan.load(tmp_path / "plan.json").metadata["fpga"]["cycles"]
        == plan.metadata["fpga"]["cycles"]
    )
