"""The FPGA model: array sizing, cycles per layer, totals, resources, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mixq.errors import HardwareCostError
from mixq.hw import AcceleratorConfig, CostReport, FpgaCostModel, uniform_plan
from mixq.hw.device import Device
from mixq.hw.synthesis import UnitCostTable
from mixq.plan import LayerPlan, LayerShape, Plan
from mixq.ratio import Ratio

SHAPES = {
    "a": LayerShape("a", "conv2d", 64, 576, 196, 100_352, 12_544),
    "b": LayerShape("b", "conv2d", 128, 576, 49, 12_544, 6_272),
    "c": LayerShape("c", "linear", 100, 128, 1, 128, 100),
}


def test_dsp_only_plan_fills_the_dsp_array(toy_device: Device, toy_units: UnitCostTable) -> None:
    model = FpgaCostModel(toy_device, AcceleratorConfig(lut_share=1.0), toy_units)
    report = model.cost(SHAPES, uniform_plan(SHAPES, "fixed-4"))
    design = report.design
    assert design is not None
    assert design.dsp_macs_per_cycle == {"fixed-4": 200} and design.lut_units == {}
    assert (design.used.dsps, design.used.luts) == (100, 0)
    for layer, shape in zip(report.layers, SHAPES.values(), strict=True):
        assert layer.cycles == layer.dsp_cycles == math.ceil(shape.macs / 200)
        assert layer.lut_cycles == 0
        assert layer.latency_s == pytest.approx(layer.cycles / 100e6)


def test_mixed_layer_takes_the_slower_array(toy_device: Device, toy_units: UnitCostTable) -> None:
    model = FpgaCostModel(toy_device, AcceleratorConfig(lut_share=1.0), toy_units)
    plan = uniform_plan(SHAPES, "sp2-4:0.5,fixed-4:0.25,fixed-8:0.25")
    report = model.cost(SHAPES, plan)
    design = report.design
    # SP2 is the only LUT candidate: the whole LUT budget, less the mode select of the
    # slices that pack fixed-4 and run fixed-8 single (29-bit accumulator over a 25-bit
    # field: 4 LUTs each), at 10 LUTs per unit: (10,000 - 100 * 4) / 10.
    assert design.lut_units == {"sp2-4": 960}
    assert design.dsp_macs_per_cycle == {"fixed-4": 200, "fixed-8": 100}
    a = report.layer("a")
    per_row = 576 * 196
    assert a.rows == {"sp2-4": 32, "fixed-4": 16, "fixed-8": 16}
    # The DSP array does the fixed-4 rows, then the fixed-8 rows; SP2 runs alongside.
    assert a.dsp_cycles == math.ceil(16 * per_row / 200) + math.ceil(16 * per_row / 100)
    assert a.lut_cycles == math.ceil(32 * per_row / 960)
    assert a.cycles == max(a.dsp_cycles, a.lut_cycles) == a.dsp_cycles


def test_lut_array_is_split_by_mac_share(toy_device: Device, toy_units: UnitCostTable) -> None:
    model = FpgaCostModel(toy_device, AcceleratorConfig(lut_share=0.5), toy_units)
    plan = uniform_plan(SHAPES, "sp2-4:0.5,pot-4:0.5")
    design = model.cost(SHAPES, plan).design
    # Equal MACs: units u each, 10u + 20u LUTs <= 5,000.
    assert design.lut_units["sp2-4"] == design.lut_units["pot-4"] == 166
    assert design.used.luts <= 5000 and design.used.dsps == 0


def test_totals_are_the_sums_of_the_layers() -> None:
    model = FpgaCostModel("xc7z045")
    plan = uniform_plan(SHAPES, "sp2-4:0.6,fixed-4:0.35,fixed-8:0.05")
    report = model.cost(SHAPES, plan, act_bits=4)
    total = report.totals
    assert total.cycles == sum(layer.cycles for layer in report.layers)
    assert total.latency_s == pytest.approx(sum(layer.latency_s for layer in report.layers))
    assert total.bops == sum(layer.bops for layer in report.layers)
    assert report.design.used.bram36 == max(layer.bram36 for layer in report.layers)


def test_design_stays_within_the_device(toy_device: Device) -> None:
    for device in ("xc7z020", "xc7z045", "xczu3eg", "xczu9eg"):
        model = FpgaCostModel(device, AcceleratorConfig(lut_share=0.6))
        design = model.cost(SHAPES, uniform_plan(SHAPES, "sp2-4:0.5,fixed-4:0.5")).design
        have = design.available
        assert design.used.luts <= 0.6 * have.luts
        assert design.used.ffs <= 0.6 * have.ffs
        assert design.used.carry <= 0.6 * have.carry
        assert design.used.dsps == have.dsps
        assert design.peak_macs_per_cycle > design.dsp_macs_per_cycle["fixed-4"]


def test_a_layer_off_the_common_ratio_leaves_an_array_idle() -> None:
    plan = Plan(
        {
            "a": LayerPlan(Ratio.parse("sp2-4:0.5,fixed-4:0.5")),
            "b": LayerPlan(Ratio.parse("fixed-8")),
            "c": LayerPlan(Ratio.parse("sp2-4")),
        }
    )
    report = FpgaCostModel("xc7z020").cost(SHAPES, plan, act_bits=8)
    assert report.layer("b").lut_cycles == 0 and report.layer("b").dsp_cycles > 0
    assert report.layer("c").dsp_cycles == 0 and report.layer("c").lut_cycles > 0


def test_report_round_trip(tmp_path: Path) -> None:
    report = FpgaCostModel("xczu9eg").cost(SHAPES, uniform_plan(SHAPES, "sp2-4:0.5,fixed-8:0.5"))
    report.save(tmp_path / "fpga.json")
    again = CostReport.load(tmp_path / "fpga.json")
    assert again == report and again.design.fits_on_chip == report.design.fits_on_chip


def test_a_report_with_an_unknown_packing_rule_is_refused(tmp_path: Path) -> None:
    report = FpgaCostModel("xc7z020").cost(SHAPES, uniform_plan(SHAPES, "fixed-4"))
    report.save(tmp_path / "fpga.json")
    text = (tmp_path / "fpga.json").read_text()
    assert '"dsp_packing": "per-layer"' in text
    (tmp_path / "bad.json").write_text(text.replace('"per-layer"', '"dense"'))
    with pytest.raises(HardwareCostError, match=r"dsp_packing must be one of .* got 'dense'"):
        CostReport.load(tmp_path / "bad.json")


def test_errors() -> None:
    with pytest.raises(HardwareCostError, match="lut_share must lie in"):
        AcceleratorConfig(lut_share=1.5)
    with pytest.raises(HardwareCostError, match="dsp_share must lie in"):
        AcceleratorConfig(dsp_share=0)
    with pytest.raises(HardwareCostError, match="no xc7 lut-mapped synthesis result for pot-8"):
        FpgaCostModel("xc7z020").cost(SHAPES, uniform_plan(SHAPES, "pot-8"))
