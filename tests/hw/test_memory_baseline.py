"""Off-chip memory, the fabric-filling baseline, the named assumptions and the Pareto
figures, against numbers worked out by hand on the toy device."""

from __future__ import annotations

import math

import pytest
import torch

from mixq.errors import HardwareCostError
from mixq.hw import (
    AcceleratorConfig,
    FpgaCostModel,
    assumptions,
    filled_baseline,
    hardware_point,
    load_device,
    lut_fixed_units,
    uniform_plan,
)
from mixq.hw.device import Device
from mixq.hw.synthesis import UnitCostTable
from mixq.plan import LayerShape, Plan
from mixq.schemes import Candidate

# 100 rows of 1,000 weights: 100,000 weights at 4 bits = 50,000 bytes, one position.
BIG = {"fc": LayerShape("fc", "linear", 100, 1000, 1, 1000, 100)}


def test_weights_that_do_not_fit_are_streamed_at_the_board_bandwidth(
    toy_device: Device, toy_units: UnitCostTable
) -> None:
    # The toy has 100 BRAM36 (3.7 Mb): 400 kb of weights fit, 100 x 36 Kb is the limit.
    model = FpgaCostModel(toy_device, units=toy_units)
    plan = uniform_plan(BIG, "fixed-4")
    fits = model.cost(BIG, plan, act_bits=8).layers[0]
    assert fits.transfer_cycles == 0 and fits.cycles == fits.compute_cycles
    small = Device(**{**toy_device.__dict__, "bram36": 10})  # 368,640 bits < 400,000
    streamed = FpgaCostModel(small, units=toy_units).cost(BIG, plan, act_bits=8)
    layer = streamed.layers[0]
    assert not streamed.design.weights_on_chip
    # 1 GB/s at 100 MHz is 10 bytes a cycle: 50,000 bytes take 5,000 cycles.
    assert layer.ddr_bytes == 50_000 and layer.transfer_cycles == 5_000
    assert layer.compute_cycles == math.ceil(100_000 / 200)  # the toy's fixed packing: 2
    assert layer.cycles == 5_000
    off = FpgaCostModel(small, AcceleratorConfig(offchip_memory=False), toy_units)
    assert off.cost(BIG, plan, act_bits=8).layers[0].cycles == layer.compute_cycles


def test_resnet18_sized_weights_overflow_the_xc7z045_but_not_compute_bound_layers() -> None:
    model = FpgaCostModel("xc7z045")
    # 512 x 4,608 weights at 4 bits (1.18 MB), one output position: pure weight streaming.
    shapes = {"fc": LayerShape("fc", "conv2d", 512, 4608, 1, 4608, 512)}
    big = Plan.from_dict({"layers": {"fc": {"ratio": {"fixed-4": 1.0}, "act_bits": 4}}})
    shapes_big = {**shapes, "pad": LayerShape("pad", "linear", 1, 5_000_000, 1, 1, 1)}
    plan = Plan({**big.layers, "pad": big.layers["fc"]})
    layer = model.cost(shapes_big, plan).layer("fc")
    bytes_per_cycle = 4.26e9 / 200e6
    assert layer.transfer_cycles == math.ceil(512 * 4608 * 4 / 8 / bytes_per_cycle)
    assert layer.cycles == layer.transfer_cycles > layer.compute_cycles


def test_filled_baseline_adds_lut_macs_beside_the_dsps() -> None:
    model = FpgaCostModel("xc7z045")
    fixed4 = Candidate.parse("fixed-4")
    units = lut_fixed_units(model, fixed4, 4)
    # 70% of 218,600 LUTs less one readout LUT per slice, 60 LUTs per fixed-4 x a4 MAC.
    assert units == (218600 * 7 // 10 - 900) // 60
    shapes = {"conv": LayerShape("conv", "conv2d", 64, 576, 196, 8192, 12544)}
    plan = uniform_plan(shapes, "fixed-4")
    base = filled_baseline(model, shapes, plan, act_bits=4)
    assert (base.dsp_macs_per_cycle, base.lut_units) == (1800, units)
    assert base.cycles == math.ceil(64 * 576 * 196 / (1800 + units))
    dsp_only = model.cost(shapes, plan, act_bits=4).totals.cycles
    assert dsp_only == math.ceil(64 * 576 * 196 / 1800) > base.cycles
    with pytest.raises(HardwareCostError, match="fixed-point only"):
        filled_baseline(model, shapes, uniform_plan(shapes, "sp2-4"), act_bits=4)


def test_a_slower_lut_clock_and_lane_overhead_slow_the_lut_array() -> None:
    shares = "sp2-4:0.7,fixed-4:0.3"
    shapes = {"conv": LayerShape("conv", "conv2d", 64, 576, 196, 8192, 12544)}
    plan = uniform_plan(shapes, shares)

    def lut_cycles(config: AcceleratorConfig) -> int:
        cycles = FpgaCostModel("xc7z020", config).cost(shapes, plan, act_bits=4).layers[0]
        assert cycles.lut_cycles is not None
        return cycles.lut_cycles

    same = lut_cycles(AcceleratorConfig())
    assert lut_cycles(AcceleratorConfig(lut_clock_ratio=0.5)) == pytest.approx(2 * same, rel=0.01)
    assert lut_cycles(AcceleratorConfig(lane_overhead_luts=20)) > same
    with pytest.raises(HardwareCostError, match="lut_clock_ratio"):
        AcceleratorConfig(lut_clock_ratio=0)


def test_every_assumption_has_a_value_and_a_range() -> None:
    named = assumptions(AcceleratorConfig(), load_device("xc7z020"))
    by_name = {a.name: a for a in named}
    assert by_name["lut_share"].value == 0.7 and 0.7 in by_name["lut_share"].plausible
    assert by_name["lut_clock_ratio"].value == 1.0
    assert by_name["lane_overhead_luts"].value == 0.0
    assert by_name["ddr_gb_per_s"].value == 4.26
    assert all(a.meaning and a.to_dict()["name"] == a.name for a in named)


def test_hardware_point_of_a_quantised_torch_model() -> None:
    import mixq
    from mixq.shapes import measure_layer_shapes

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(576, 10)
    )
    qnet = mixq.quantize(net, "rmsmp", calibration_data=[torch.randn(8, 3, 8, 8)], progress=False)
    shapes = measure_layer_shapes(qnet, torch.zeros(1, 3, 8, 8))
    point = hardware_point(qnet, shapes)
    summary = mixq.describe(qnet)
    # Weights alone, each row at its bits (describe also counts scales and biases).
    bits = sum(
        n * Candidate.parse(c).bits * shapes[layer.name].macs_per_row
        for layer in summary.layers
        for c, n in layer.counts.items()
    )
    assert point.weight_kib == pytest.approx(bits / 8192)
    assert point.weight_kib < summary.weight_kib
    assert hardware_point(summary, shapes) == point
    for device in ("xc7z020", "xc7z045"):
        report = FpgaCostModel(device).cost(shapes, mixq.hw.plan_from_summary(summary))
        assert report.totals.latency_s is not None
        assert point.images_per_s[device] == pytest.approx(1 / report.totals.latency_s)
        assert point.latency_ms[device] == pytest.approx(report.totals.latency_s * 1e3)
    assert point.to_dict()["assumptions"]["batch"] == 1
    with pytest.raises(HardwareCostError, match="cannot cost a int"):
        hardware_point(3, shapes)
