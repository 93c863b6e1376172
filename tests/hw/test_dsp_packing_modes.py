"""Per-layer DSP packing: a slice packs two MACs on the layers whose widths allow it and
runs one elsewhere; "widest" (one packing for the array) is the model before it."""

from __future__ import annotations

import math

import pytest
import torch

from mixq.errors import HardwareCostError
from mixq.hw import AcceleratorConfig, FpgaCostModel, derive_ratio, hardware_point, uniform_plan
from mixq.hw.fpga import mode_select_luts
from mixq.hw.report import CostReport
from mixq.models import resnet20
from mixq.models.resnet_imagenet import resnet18_imagenet
from mixq.plan import LayerPlan, LayerShape, Plan
from mixq.ratio import Ratio
from mixq.schemes import Candidate
from mixq.shapes import measure_layer_shapes

# A ResNet-20-like stack: the first and last layer Fixed-8 with 8-bit inputs, Fixed-4 at A4
# between them.
SHAPES = {
    "first": LayerShape("first", "conv2d", 16, 27, 1024, 3072, 16384),
    "mid": LayerShape("mid", "conv2d", 16, 144, 1024, 16384, 16384),
    "last": LayerShape("last", "linear", 10, 64, 1, 64, 10),
}
EDGES_A8 = Plan(
    {
        "first": LayerPlan(Ratio.parse("fixed-8"), 8),
        "mid": LayerPlan(Ratio.parse("fixed-4"), 4),
        "last": LayerPlan(Ratio.parse("fixed-8"), 8),
    }
)


def _cost(packing: str) -> CostReport:
    config = AcceleratorConfig(dsp_packing=packing, offchip_memory=False)
    return FpgaCostModel("xc7z045", config).cost(SHAPES, EDGES_A8)


def test_four_bit_layers_pack_two_macs_beside_eight_bit_edges() -> None:
    report = _cost("per-layer")
    # 900 DSP48E1s: two fixed-4 MACs each at 4-bit inputs, one fixed-8 MAC at 8-bit inputs.
    assert [layer.dsp_cycles for layer in report.layers] == [
        math.ceil(16 * 27 * 1024 / 900),  # 492
        math.ceil(16 * 144 * 1024 / 1800),  # 1,311
        math.ceil(10 * 64 / 900),  # 1
    ]
    assert report.totals.cycles == 492 + 1311 + 1
    design = report.design
    assert design.dsp_macs_by_act == {"fixed-8": {8: 900}, "fixed-4": {4: 1800}}
    # Beside each slice: the packed readout (1 LUT, 7 CARRY4) and the mode select, one LUT
    # per bit of fixed-8/a8's 29-bit accumulator above the 21-bit packed field.
    assert (design.used.luts, design.used.carry) == (900 * (1 + 8), 900 * 7)


def test_widest_packing_is_the_model_before() -> None:
    report = _cost("widest")
    # Packed for the 8-bit edges, the fixed-4 layer gets one MAC per slice too, and no
    # slice packs: no readout, no mode select.
    assert [layer.dsp_cycles for layer in report.layers] == [492, math.ceil(2359296 / 900), 1]
    assert report.design.dsp_macs_by_act == {"fixed-8": {8: 900}, "fixed-4": {4: 900}}
    assert (report.design.used.luts, report.design.used.carry) == (0, 0)


def test_committed_figures_under_both_settings() -> None:
    # benchmarks/results/fpga_ilp_pareto.json (written under "widest"): ResNet-20, Fixed-4
    # at A4 inside, Fixed-8 with 8-bit inputs at the edges: 4,437.84 images/s on XC7Z045,
    # 1,084.95 on XC7Z020; with per-layer packing it is twice the DSP rate inside.
    shapes = measure_layer_shapes(resnet20().eval(), torch.zeros(1, 3, 32, 32))
    names = list(shapes)
    plan = Plan(
        {
            n: LayerPlan(Ratio.parse("fixed-8"), 8)
            if n in (names[0], names[-1])
            else LayerPlan(Ratio.parse("fixed-4"), 4)
            for n in names
        }
    )
    widest = hardware_point(plan, shapes, config=AcceleratorConfig(dsp_packing="widest"))
    assert {d: round(v, 2) for d, v in widest.images_per_s.items()} == {
        "xc7z020": 1084.95,
        "xc7z045": 4437.84,
    }
    per_layer = hardware_point(plan, shapes)
    assert {d: round(v, 2) for d, v in per_layer.images_per_s.items()} == {
        "xc7z020": 2146.25,
        "xc7z045": 8779.25,
    }
    assert per_layer.assumptions["dsp_packing"] == "per-layer"


@pytest.mark.parametrize("packing", ["per-layer", "widest"])
def test_uniform_activations_do_not_depend_on_the_setting(packing: str) -> None:
    # benchmarks/results/fpga_cost.json: ResNet-18 at A4 everywhere, MSP's derived ratio
    # with the Fixed-8 edges, 347.77 images/s on XC7Z045; one width, so one packing.
    shapes = measure_layer_shapes(resnet18_imagenet().eval(), torch.zeros(1, 3, 224, 224))
    model = FpgaCostModel("xc7z045", AcceleratorConfig(dsp_packing=packing))
    shares = derive_ratio(model, ["sp2-4", "fixed-4"], 4.0, act_bits=4).ratio.to_dict()
    ratio = ",".join(f"{c}:{s:.6f}" for c, s in shares.items())  # as the benchmark writes it
    report = model.cost(shapes, uniform_plan(shapes, ratio, edge_ratio="fixed-8"), act_bits=4)
    assert report.totals.cycles is not None
    assert round(model.device.clock_mhz * 1e6 / report.totals.cycles, 2) == 347.77


def test_mode_select_is_charged_only_where_both_modes_meet() -> None:
    model = FpgaCostModel("xc7z045")
    fixed4 = Candidate.parse("fixed-4")
    both = model.design_for({fixed4: 1.0}, {fixed4: 8}, 0, {fixed4: [4, 8]})
    # Packed at A4 (21-bit field), single at A8 (25-bit accumulator): 4 LUTs of select.
    assert both.dsp_macs_by_act == {"fixed-4": {4: 1800, 8: 900}}
    assert both.used.luts == 900 * (1 + 4)
    packed_only = model.design_for({fixed4: 1.0}, {fixed4: 4})
    assert packed_only.used.luts == 900 * 1
    assert mode_select_luts(model.device, [(fixed4, 8)]) == 0
    # A layer narrower than any width the array was built for takes the nearest wider
    # one's packing; a wider one was not built for.
    assert both.dsp_rate("fixed-4", 2) == 1800 and both.dsp_rate("fixed-4", 6) == 900
    with pytest.raises(HardwareCostError, match="up to 8-bit activations, not 16"):
        both.dsp_rate("fixed-4", 16)


def test_an_unknown_packing_setting_is_refused() -> None:
    with pytest.raises(HardwareCostError, match="dsp_packing must be one of per-layer, widest"):
        AcceleratorConfig(dsp_packing="narrowest")
