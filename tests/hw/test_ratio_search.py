"""The ratio derivation: the searched optimum equals the analytical one where it exists."""

from __future__ import annotations

import numpy as np
import pytest

from mixq.errors import HardwareCostError
from mixq.hw import (
    AcceleratorConfig,
    FpgaCostModel,
    balanced_lut_share,
    derive_ratio,
    throughput,
    throughput_curve,
    uniform_plan,
)
from mixq.hw.device import Device
from mixq.hw.synthesis import UnitCostTable
from mixq.plan import LayerShape
from mixq.schemes import Candidate

CANDIDATES = ["sp2-4", "fixed-4", "fixed-8"]


@pytest.mark.parametrize(
    ("budget", "sp2_share"),
    [(4.0, 1 / 200 / (1 / 960 + 1 / 200)), (4.2, (0.95 / 200 + 0.05 / 100) / (1 / 960 + 1 / 200))],
)
def test_toy_optimum_by_hand(
    toy_device: Device, toy_units: UnitCostTable, budget: float, sp2_share: float
) -> None:
    # 960 SP2 units ((10,000 LUTs - 100 slices x 4 LUTs of mode select between packed
    # fixed-4 and single fixed-8) / 10); DSPs give 200 fixed-4 or 100 fixed-8 MACs/cycle.
    model = FpgaCostModel(toy_device, AcceleratorConfig(lut_share=1.0), toy_units)
    best = derive_ratio(model, CANDIDATES, budget, act_bits=8)
    shares = best.ratio.to_dict()
    assert shares["sp2-4"] == pytest.approx(sp2_share, abs=1e-9)
    assert shares["fixed-8"] == pytest.approx((budget - 4) / 4, abs=1e-9)
    assert best.macs_per_cycle == pytest.approx(960 / sp2_share)
    assert set(best.binding) == {"dsps", "luts"}
    if budget == 4.0:
        assert best.macs_per_cycle == pytest.approx(960 + 200)  # both arrays, all busy


@pytest.mark.parametrize("device", ["xc7z020", "xc7z045", "xczu3eg", "xczu9eg"])
@pytest.mark.parametrize("budget", [4.0, 4.2, 4.6])
@pytest.mark.parametrize("act_bits", [4, 8])
def test_search_equals_the_analytical_optimum(device: str, budget: float, act_bits: int) -> None:
    model = FpgaCostModel(device)
    sp2, low, high = (Candidate.parse(c) for c in CANDIDATES)
    slices = model.dsp_slices()
    fabric = model.fabric_budget(model.dsp_overhead([low, high], act_bits), slices)
    unit = model.lut_unit(sp2, act_bits)
    # U: the SP2 units that fit in whichever fabric resource runs out first.
    lut_units = min(getattr(fabric, r) / getattr(unit, r) for r in ("luts", "ffs", "carry"))
    high_share = (budget - 4) / 4
    low_macs = slices * model.device.macs_per_dsp(4, act_bits)
    high_macs = slices * model.device.macs_per_dsp(8, act_bits)
    expected = balanced_lut_share(lut_units, low_macs, high_macs, high_share)
    best = derive_ratio(model, CANDIDATES, budget, act_bits=act_bits)
    assert best.ratio.to_dict()["sp2-4"] == pytest.approx(expected, abs=1e-7)
    assert best.macs_per_cycle == pytest.approx(lut_units / expected, rel=1e-7)


def test_curve_peaks_at_the_derived_ratio() -> None:
    model = FpgaCostModel("xc7z045")
    best = derive_ratio(model, CANDIDATES, 4.2, act_bits=4)
    shares, macs = throughput_curve(model, "sp2-4", "fixed-4", "fixed-8", 4.2, points=401)
    step = shares[1] - shares[0]
    assert abs(shares[np.argmax(macs)] - best.ratio.to_dict()["sp2-4"]) <= step
    assert macs.max() <= best.macs_per_cycle * (1 + 1e-9)
    assert throughput(model, best.ratio.to_dict(), 4) == pytest.approx(best.macs_per_cycle)
    # Rising while the DSP array limits, falling once the LUT array does.
    peak = int(np.argmax(macs))
    assert np.all(np.diff(macs[: peak + 1]) >= 0) and np.all(np.diff(macs[peak:]) <= 0)


def test_layer_model_reaches_the_derived_throughput() -> None:
    model = FpgaCostModel("xc7z020")
    best = derive_ratio(model, CANDIDATES, 4.2, act_bits=4)
    big = {"big": LayerShape("big", "conv2d", 4000, 2304, 196, 1, 1)}
    ratio = ",".join(f"{c}:{s}" for c, s in best.ratio.to_dict().items())
    report = model.cost(big, uniform_plan(big, ratio), act_bits=4)
    achieved = report.totals.macs / report.totals.cycles
    assert achieved == pytest.approx(best.macs_per_cycle, rel=0.01)  # rows round to integers


def test_dsp_only_candidates_leave_no_choice() -> None:
    best = derive_ratio(FpgaCostModel("xc7z020"), ["fixed-4", "fixed-8"], 5.0, act_bits=4)
    assert best.ratio.to_dict() == pytest.approx({"fixed-4": 0.75, "fixed-8": 0.25})
    assert best.binding == ["dsps"]


def test_bad_requests() -> None:
    model = FpgaCostModel("xc7z020")
    with pytest.raises(HardwareCostError, match="outside what sp2-4, fixed-4 can average"):
        derive_ratio(model, ["sp2-4", "fixed-4"], 5.0)
    with pytest.raises(HardwareCostError, match="distinct"):
        derive_ratio(model, ["sp2-4", "sp2-4"], 4.0)
    with pytest.raises(HardwareCostError, match="of equal bits"):
        throughput_curve(model, "sp2-4", "fixed-8", "fixed-4", 6.0)
