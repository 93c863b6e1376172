"""Parsing Yosys reports into unit costs, and the committed synthesis table."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixq.errors import HardwareCostError
from mixq.hw.synthesis import (
    CellCounts,
    UnitCost,
    UnitCostTable,
    load_unit_costs,
    parse_yosys_stat,
)
from mixq.hw.units import MacUnit, default_units

DATA = Path(__file__).parent / "data"


def test_parses_a_stored_lut_report() -> None:
    counts = parse_yosys_stat((DATA / "yosys_stat_xc7_sp2-4_a4_lut.txt").read_text())
    # LUT2 17 + LUT3 9 + LUT4 2 + LUT5 1 + LUT6 2; the clock buffer is not the unit's.
    assert (counts.luts, counts.carry, counts.ffs, counts.dsps) == (31, 8, 21, 0)
    assert "BUFG" not in counts.cells and counts.cells["FDRE"] == 21


def test_parses_a_stored_dsp_report() -> None:
    counts = parse_yosys_stat((DATA / "yosys_stat_xc7_fixed-8_a8_dsp.txt").read_text())
    assert (counts.luts, counts.carry, counts.ffs, counts.dsps) == (0, 0, 0, 1)


def test_reads_the_last_module_and_stops_at_the_cell_list() -> None:
    report = """
=== helper ===
   Number of cells:                  1
     LUT6                            9
=== top ===
   Number of cells:                  3
     INV                             1
     CARRY8                          2
     DSP48E2                         1
     FDSE                            4

   Chip area for module '\\top': 0
"""
    counts = parse_yosys_stat(report)
    assert (counts.luts, counts.carry, counts.ffs, counts.dsps) == (
        1,
        4,
        4,
        1,
    )  # CARRY8: 2 x 4 bits


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello", "no '=== module ===' section"),
        ("=== m ===\n  Number of wires: 3\n", "no 'Number of cells:'"),
        ("=== m ===\n   Number of cells: 1\n     $add  1\n", "unmapped cells"),
    ],
)
def test_refuses_what_is_not_a_synthesised_report(text: str, message: str) -> None:
    with pytest.raises(HardwareCostError, match=message):
        parse_yosys_stat(text)


def _cost(key: str, luts: int) -> UnitCost:
    return UnitCost(MacUnit.parse(key), "xc7", "lut", CellCounts.from_cells({"LUT6": luts}))


def test_table_round_trip_and_wider_activation_fallback(tmp_path: Path) -> None:
    table = UnitCostTable((_cost("sp2-4/a4", 31), _cost("sp2-4/a8", 43)), "yosys", "cmd")
    table.save(tmp_path / "t.json")
    again = UnitCostTable.load(tmp_path / "t.json")
    assert again == table
    assert again.get(MacUnit.parse("sp2-4/a6"), "xc7", "lut").counts.luts == 43
    assert again.get(MacUnit.parse("sp2-4/a2"), "xc7", "lut").counts.luts == 31
    with pytest.raises(HardwareCostError, match="no xc7 lut-mapped synthesis result for sp2-4/a9"):
        again.get(MacUnit.parse("sp2-4/a9"), "xc7", "lut")
    with pytest.raises(HardwareCostError, match="pot-4/a4"):
        again.get(MacUnit.parse("pot-4/a4"), "xc7", "lut")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(HardwareCostError, match="not valid JSON"):
        UnitCostTable.load(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(HardwareCostError, match="malformed synthesis table"):
        UnitCostTable.load(tmp_path / "empty.json")
    with pytest.raises(HardwareCostError, match="not found"):
        UnitCostTable.load(tmp_path / "missing.json")


def test_committed_table_covers_every_unit_family_and_mapping() -> None:
    table = load_unit_costs()
    for family in ("xc7", "xcup"):
        for unit in default_units():
            lut = table.get(unit, family, "lut")
            dsp = table.get(unit, family, "dsp")
            assert lut.unit == unit == dsp.unit
            assert lut.counts.dsps == 0 and lut.counts.luts > 0
            assert lut.counts.ffs == unit.acc_bits  # the accumulator register, nothing else
    # Multipliers go to one DSP slice with the accumulator inside it; shift-add units never.
    assert table.get(MacUnit.parse("fixed-8/a8"), "xc7", "dsp").counts.dsps == 1
    assert table.get(MacUnit.parse("fixed-8/a8"), "xc7", "dsp").counts.luts == 0
    assert table.get(MacUnit.parse("sp2-4/a4"), "xc7", "dsp").counts.dsps == 0
