"""The FPGA budget's per-(layer, option) cycle constants with layers at different
activation bits, under both DSP packing settings: each equals mixq.hw's own cost of that
layer in every plan, and the ILP's optimum equals brute force."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from mixq.allocation.budget import Budget
from mixq.allocation.fpga_budget import FpgaThroughput, ThroughputCosts, throughput_costs
from mixq.allocation.ilp import solve_ilp
from mixq.allocation.options import CandidateOption, LayerOptions, PerturbationTable
from mixq.hw import AcceleratorConfig, FpgaCostModel
from mixq.hw.option_cycles import plan_on_design
from mixq.plan import LayerPlan, LayerShape, Plan
from mixq.ratio import Ratio

LABELS = ("fixed-8", "fixed-4", "sp2-4", "sp2-4:0.5,fixed-4:0.5")
# The first layer takes 8-bit inputs (as an image does), the others 4-bit ones.
ACT = {"a": 8, "b": 4, "c": 4, "d": 4}


def _conv(name: str, rows: int, inputs: int, side: int) -> LayerShape:
    return LayerShape(
        name, "conv2d", rows, inputs * 9, side * side, inputs * side * side, rows * side * side
    )


SHAPES = {
    "a": _conv("a", 64, 16, 16),
    "b": _conv("b", 256, 256, 2),
    "c": _conv("c", 256, 256, 2),
    "d": _conv("d", 64, 64, 4),
}


def _table(seed: int) -> PerturbationTable:
    rng = np.random.default_rng(seed)
    layers = {}
    for name, shape in SHAPES.items():
        labels = rng.choice(LABELS, size=3, replace=False)
        options = tuple(
            CandidateOption(Ratio.parse(label), float(rng.uniform(0.5, 1.5) / len(label)))
            for label in labels
        )
        layers[name] = LayerOptions(shape, options)
    return PerturbationTable(layers, granularity="row")


def _plan(table: PerturbationTable, choice: tuple[int, ...]) -> Plan:
    return Plan(
        {
            name: LayerPlan(layer.options[i].ratio, ACT[name])
            for (name, layer), i in zip(table.layers.items(), choice, strict=True)
        }
    )


@functools.cache
def _spec(device: str, packing: str, target: float = 1.0) -> FpgaThroughput:
    return FpgaThroughput(device, target, AcceleratorConfig(dsp_packing=packing))


def _brute_force(
    table: PerturbationTable, device: str, packing: str
) -> tuple[ThroughputCosts, np.ndarray, np.ndarray]:
    """The budget's constants, and every plan's omega and cycles as mixq.hw costs it on
    the budget's design; each layer's cost is checked against its constant on the way."""
    spec = _spec(device, packing)
    costs = throughput_costs(spec, table, ACT)
    model = FpgaCostModel(device, spec.config)
    omegas, cycles = [], []
    for choice in itertools.product(
        *(range(len(layer.options)) for layer in table.layers.values())
    ):
        report = plan_on_design(model, costs.design, SHAPES, _plan(table, choice))
        assert report.design is not None
        constants = costs.on_chip if report.design.weights_on_chip else costs.streamed
        for layer, index in zip(report.layers, choice, strict=True):
            assert layer.cycles == constants[layer.name][index]
        assert report.totals.cycles is not None
        cycles.append(report.totals.cycles)
        omegas.append(
            sum(layer.omegas()[i] for layer, i in zip(table.layers.values(), choice, strict=True))
        )
    return costs, np.array(omegas), np.array(cycles)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("packing", ["per-layer", "widest"])
@pytest.mark.parametrize("device", ["xc7z020", "xc7z045"])
def test_constants_and_optimum_equal_brute_force(seed: int, packing: str, device: str) -> None:
    table = _table(seed)
    costs, omegas, all_cycles = _brute_force(table, device, packing)
    clock = costs.clock_hz
    for share in (0.2, 0.6, 0.95):
        slow, fast = clock / all_cycles.max(), clock / all_cycles.min()
        spec = _spec(device, packing, slow + share * (fast - slow))
        expected = float(omegas[clock / all_cycles >= spec.images_per_s].min())
        plan = solve_ilp(table, Budget(fpga=spec), act_bits=ACT, method="joint-ilp")
        assert plan.metadata["objective"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert clock / plan.metadata["fpga"]["cycles"] >= spec.images_per_s


def test_per_layer_packing_doubles_the_dsp_rate_of_four_bit_layers_only() -> None:
    table = PerturbationTable(
        {n: LayerOptions(s, (CandidateOption("fixed-4", 1.0),)) for n, s in SHAPES.items()},
        granularity="row",
    )
    per_layer = throughput_costs(_spec("xc7z045", "per-layer"), table, ACT)
    widest = throughput_costs(_spec("xc7z045", "widest"), table, ACT)
    assert per_layer.design.dsp_macs_by_act == {"fixed-4": {4: 1800, 8: 900}}
    assert widest.design.dsp_macs_by_act == {"fixed-4": {4: 900, 8: 900}}
    # Compute-bound on chip: 900 slices, one MAC each at 8-bit inputs, two at 4-bit ones
    # (per-layer), or one everywhere (widest: packed for layer a's 8-bit inputs).
    assert per_layer.on_chip["a"][0] == widest.on_chip["a"][0] == -(-SHAPES["a"].macs // 900)
    assert per_layer.on_chip["d"][0] == -(-SHAPES["d"].macs // 1800)
    assert widest.on_chip["d"][0] == -(-SHAPES["d"].macs // 900)
