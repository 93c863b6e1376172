"""The dual-mode DSP slice behind per-layer packing: packed at 4-bit activations, one MAC
(high weight 0) at 8-bit ones, bit-exact in both; its mode select is what the cost model
charges."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mixq.errors import HardwareCostError
from mixq.hw.device import load_device
from mixq.hw.dual_mode_mac import DualModeMac, dual_stimulus, expected_outputs, simulate_dual
from mixq.hw.fpga import mode_select_luts
from mixq.hw.synthesis import PACKED_SYNTHESIS
from mixq.schemes import Candidate

RTL = Path(__file__).resolve().parents[2] / "hardware" / "rtl"
needs_iverilog = pytest.mark.skipif(
    shutil.which("iverilog") is None or shutil.which("vvp") is None,
    reason="Icarus Verilog (iverilog, vvp) is not installed",
)
needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed")


def test_the_single_mode_needs_the_bits_above_the_packed_field() -> None:
    # Single dot products reach past the 21-bit packed field (read through the packed
    # path they would be wrong) and stay within the 25-bit single accumulator; packed ones
    # stay within the field; the high weight is 0 in single mode.
    full = dual_stimulus(DualModeMac(4, 4, 8), random_cycles=0)
    _, lo_full = expected_outputs(full)
    assert 2**20 <= np.abs(lo_full[full.single]).max() < 2**24
    assert np.abs(lo_full[~full.single]).max() < 2**20
    assert (full.w_hi[full.single] == 0).all()


def test_the_cost_models_select_is_the_units_bits() -> None:
    z7 = load_device("xc7z045")
    fixed4 = Candidate.parse("fixed-4")
    assert mode_select_luts(z7, [(fixed4, 4), (fixed4, 8)]) == DualModeMac(4, 4, 8).mode_select_bits


def test_the_measured_select_is_one_lut_per_bit() -> None:
    # src/mixq/hw/packed_mac_synthesis.json (hardware/packed_mac.py): each dual-mode slice
    # is the packed slice (1 LUT, 7 CARRY4 for fixed-4) plus one LUT per selected bit.
    table = json.loads(PACKED_SYNTHESIS.read_text())
    packed = {u["unit"]: u for u in table["units"]}
    for dual in table["dual_mode"]:
        plain = packed[dual["unit"].replace("dual-", "packed-").split("+")[0]]
        assert dual["dsps"] == 1 and dual["carry"] == plain["carry"]
        assert dual["luts"] - plain["luts"] == dual["mode_select_bits"] == 4


def test_a_width_that_does_not_pack_is_refused() -> None:
    with pytest.raises(HardwareCostError, match="do not pack at 8-bit"):
        DualModeMac(4, 8, 8)


@needs_iverilog
def test_dual_mode_rtl_is_bit_exact_in_both_modes(tmp_path: Path) -> None:
    result = simulate_dual(DualModeMac(4, 4, 8), RTL, tmp_path, random_cycles=2000)
    assert result.single_cycles > 15 * 256 + 2 * 8192
    assert result.mismatches == 0, f"first mismatch at cycle {result.first_mismatch}"


@needs_iverilog
@needs_yosys
def test_dual_mode_netlist_is_bit_exact(tmp_path: Path) -> None:
    unit = DualModeMac(4, 4, 8)
    result = simulate_dual(unit, RTL, tmp_path, netlist=True, random_cycles=500, longest=512)
    assert (result.target, result.mismatches) == ("netlist", 0)
    assert (tmp_path / "netlist.v").read_text().count("DSP48E1 ") == 1
