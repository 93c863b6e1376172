"""A toy device and unit table with round numbers, for checks worked out by hand."""

from __future__ import annotations

import pytest

from mixq.hw.device import Device
from mixq.hw.synthesis import CellCounts, UnitCost, UnitCostTable
from mixq.hw.units import MacUnit


@pytest.fixture
def toy_device() -> Device:
    """10,000 LUTs and 100 DSP slices; fabric other than LUTs is plentiful."""
    return Device(
        name="toy",
        family="toy",
        synthesis_family="xc7",
        luts=10_000,
        ffs=1_000_000,
        dsps=100,
        bram36=100,
        clock_mhz=100.0,
        ddr_gb_per_s=1.0,
        dsp_packing={4: 2, 8: 1},
    )


@pytest.fixture
def toy_units() -> UnitCostTable:
    """An SP2-4 unit of 10 LUTs; fixed-point units of one DSP slice and no fabric."""

    def cost(key: str, mapping: str, cells: dict[str, int]) -> UnitCost:
        return UnitCost(MacUnit.parse(key), "xc7", mapping, CellCounts.from_cells(cells))  # type: ignore[arg-type]

    return UnitCostTable(
        (
            cost("sp2-4/a8", "lut", {"LUT6": 10}),
            cost("pot-4/a8", "lut", {"LUT6": 20}),
            cost("fixed-4/a8", "dsp", {"DSP48E1": 1}),
            cost("fixed-8/a8", "dsp", {"DSP48E1": 1}),
        ),
        tool="hand-made",
    )
