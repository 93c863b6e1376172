"""The Verilog MAC units agree bit for bit with mixq's grids (Icarus Verilog).

Needs ``iverilog`` (and ``yosys`` for the netlist check): ``apt-get install -y iverilog
yosys``. Without them these tests skip; the committed synthesis table keeps the cost
model working.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mixq.errors import HardwareCostError
from mixq.hw.rtl_sim import expected_accumulator, simulate, stimulus
from mixq.hw.units import ACC_GUARD_BITS, MacUnit

RTL = Path(__file__).resolve().parents[2] / "hardware" / "rtl"
needs_iverilog = pytest.mark.skipif(
    shutil.which("iverilog") is None,
    reason="Icarus Verilog not installed (apt-get install iverilog)",
)
needs_yosys = pytest.mark.skipif(
    shutil.which("yosys") is None, reason="Yosys not installed (apt-get install yosys)"
)


def test_stimulus_covers_every_code_and_activation_and_the_worst_case() -> None:
    unit = MacUnit.parse("sp2-4/a4")
    stim = stimulus(unit, random_cycles=100)
    pairs = set(zip(stim.code.tolist(), stim.act.tolist(), strict=True))
    assert {(c, a) for c, _ in unit.weight_codes() for a in range(16)} <= pairs
    acc = expected_accumulator(stim, unit.acc_bits)
    largest = 15 * 8
    assert acc.max() == largest * 2**ACC_GUARD_BITS  # the guard bits, used to the last one
    assert acc.min() == -largest * 2**ACC_GUARD_BITS
    assert acc.max() < 2 ** (unit.acc_bits - 1)


def test_reference_refuses_a_stimulus_that_would_overflow() -> None:
    stim = stimulus(MacUnit.parse("fixed-4/a4"), random_cycles=10)
    with pytest.raises(HardwareCostError, match="overflows a 12-bit accumulator"):
        expected_accumulator(stim, 12)


@needs_iverilog
@pytest.mark.parametrize("key", ["sp2-4/a4", "pot-4/a8", "fixed-8/a8", "sp2-5/a8", "fixed-3/a4"])
def test_rtl_matches_the_grids(key: str, tmp_path: Path) -> None:
    result = simulate(MacUnit.parse(key), RTL, tmp_path, random_cycles=5000)
    assert result.cycles > result.weight_codes * result.activations
    assert result.mismatches == 0, f"first mismatch at cycle {result.first_mismatch}"


@needs_iverilog
def test_a_wrong_unit_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "rtl"
    broken.mkdir()
    source = (RTL / "sp2_mac.v").read_text()
    assert "acc + flipped + negative" in source
    # Forgetting the +1 of two's complement subtraction: off by one on negative weights.
    (broken / "sp2_mac.v").write_text(source.replace("acc + flipped + negative", "acc + flipped"))
    result = simulate(MacUnit.parse("sp2-4/a4"), broken, tmp_path / "sim", random_cycles=100)
    assert result.mismatches > 0 and result.first_mismatch is not None


@needs_iverilog
@needs_yosys
def test_synthesised_dsp_netlist_matches_the_grids(tmp_path: Path) -> None:
    # The multiplier and accumulator mapped into a DSP48E1, simulated with Yosys's model.
    result = simulate(MacUnit.parse("fixed-4/a4"), RTL, tmp_path, netlist=True, random_cycles=2000)
    assert (result.target, result.mismatches) == ("netlist", 0)
    netlist = (tmp_path / "netlist.v").read_text()
    assert "DSP48E1" in netlist and np.isfinite(result.cycles)
