"""The DSP packing rule, worked out by hand, and the packed MAC's RTL against integers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mixq.errors import DeviceError, HardwareCostError
from mixq.hw.packed_mac import PackedMac, expected_fields, packed_stimulus, simulate_packed
from mixq.hw.packing import DSP48E1, DSP48E2, DspPorts, dsp_packing, max_products, product_bits
from mixq.hw.synthesis import load_packed_costs

RTL = Path(__file__).resolve().parents[2] / "hardware" / "rtl"
needs_iverilog = pytest.mark.skipif(
    shutil.which("iverilog") is None,
    reason="Icarus Verilog not installed (apt-get install iverilog)",
)
needs_yosys = pytest.mark.skipif(
    shutil.which("yosys") is None, reason="Yosys not installed (apt-get install yosys)"
)


def test_spacing_is_the_product_plus_the_guard_bits() -> None:
    # 7 x 15 = 105 needs 7 bits and a sign; 13 guard bits hold 4,608 (ResNet-18's row).
    assert product_bits(4, 4) == 8
    rule = dsp_packing(DSP48E1, 4, 4)
    assert (rule.macs, rule.spacing) == (2, 21)
    assert rule.max_products == (2**20 - 1) // 105 >= 4608
    # The old "11 bits apart": the low field holds 1,023 / 105 = 9 products.
    assert max_products(11, 4, 4) == 9


def test_eight_bit_activations_do_not_pack_on_either_slice() -> None:
    # 7 x 255 = 1,785: 12 bits, spacing 25; the high weight then needs 29 bits.
    e1 = dsp_packing(DSP48E1, 4, 8)
    assert (e1.macs, e1.spacing) == (1, 25)
    assert "29 bits of the 25-bit pre-adder" in e1.reason
    assert dsp_packing(DSP48E2, 4, 8).macs == 1
    assert dsp_packing(DSP48E2, 3, 8).macs == 2  # 24 + 3 = 27 bits
    assert dsp_packing(DSP48E1, 8, 8).macs == 1
    # At the 21-bit spacing that would fit, the low field overflows after 587 products.
    assert max_products(21, 4, 8) == 587 < 4608


def test_narrow_accumulators_and_ports_refuse_to_pack() -> None:
    narrow = DspPorts(preadd_bits=30, multiplier_bits=18, accumulator_bits=40)
    assert dsp_packing(narrow, 4, 4).macs == 1  # two 21-bit fields need 42 bits
    tiny_port = DspPorts(preadd_bits=30, multiplier_bits=4, accumulator_bits=48)
    assert "activation needs 5 bits" in dsp_packing(tiny_port, 4, 4).reason
    with pytest.raises(DeviceError, match="port width"):
        DspPorts(preadd_bits=0, multiplier_bits=18, accumulator_bits=48)
    with pytest.raises(DeviceError, match="cannot pack 1-bit"):
        dsp_packing(DSP48E1, 1, 4)


def test_reference_sums_both_fields_and_reaches_the_worst_case() -> None:
    unit = PackedMac(4, 4)
    stim = packed_stimulus(unit, random_cycles=50)
    hi, lo = expected_fields(stim)
    assert hi.max() == 105 * 2**13 and lo.min() == -105 * 2**13
    assert max(abs(hi).max(), abs(lo).max()) < 2 ** (unit.spacing - 1)
    with pytest.raises(HardwareCostError, match="outside the accumulator"):
        PackedMac(4, 4, spacing=48)


def test_committed_readout_measurement_is_one_slice_and_an_incrementer() -> None:
    costs = load_packed_costs()
    cells = costs["packed-fixed-4/a4"]
    assert cells.dsps == 1 and cells.ffs == 0
    # The high field's 27-bit sign correction: 7 CARRY4 segments.
    assert cells.carry == 7 and cells.luts <= 4


@needs_iverilog
def test_packed_rtl_is_bit_exact_where_the_rule_packs(tmp_path: Path) -> None:
    result = simulate_packed(PackedMac(4, 4), RTL, tmp_path, random_cycles=2000)
    assert result.cycles > 15 * 15 * 16 + 4 * 8192
    assert result.mismatches == 0, f"first mismatch at cycle {result.first_mismatch}"


@needs_iverilog
@pytest.mark.parametrize(("act_bits", "spacing"), [(4, 11), (8, 21)])
def test_packed_rtl_overflows_where_the_rule_refuses(
    act_bits: int, spacing: int, tmp_path: Path
) -> None:
    result = simulate_packed(PackedMac(4, act_bits, spacing), RTL, tmp_path, random_cycles=200)
    assert result.mismatches > 0


@needs_iverilog
@needs_yosys
def test_packed_netlist_uses_one_dsp48e1_and_is_bit_exact(tmp_path: Path) -> None:
    # The RTL test runs the full-length worst case; the slower netlist model a shorter one.
    unit = PackedMac(4, 4)
    result = simulate_packed(unit, RTL, tmp_path, netlist=True, random_cycles=500, longest=512)
    assert (result.target, result.mismatches) == ("netlist", 0)
    assert (tmp_path / "netlist.v").read_text().count("DSP48E1 ") == 1
