"""Latency tables for the ILP: the typed value, and the table the FPGA model fills."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mixq.errors import HardwareCostError
from mixq.hw import AcceleratorConfig, FpgaCostModel, LatencyTable, fpga_latency_table
from mixq.hw.device import Device
from mixq.hw.synthesis import UnitCostTable
from mixq.plan import LayerShape

SHAPES = {
    "conv": LayerShape("conv", "conv2d", 64, 576, 196, 1, 1),
    "fc": LayerShape("fc", "linear", 10, 64, 1, 64, 10),
}


def test_table_round_trip_and_lookups(tmp_path: Path) -> None:
    table = LatencyTable("s", {"conv": {"fixed4": 1e-3, "sp2-4": 2e-3}}, "cpu:test", {"n": 1})
    assert table.get("conv", "fixed-4") == 1e-3  # candidates are normalised
    table.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json") == table
    with pytest.raises(HardwareCostError, match="no latency for layer 'fc' with fixed-4"):
        table.get("fc", "fixed-4")
    with pytest.raises(HardwareCostError, match="must be >= 0"):
        LatencyTable("s", {"conv": {"fixed-4": -1.0}}, "x")
    with pytest.raises(HardwareCostError, match="'cycles' or 's'"):
        LatencyTable("ms", {}, "x")  # type: ignore[arg-type]
    (tmp_path / "bad.json").write_text('{"unit": "s"}')
    with pytest.raises(HardwareCostError, match="malformed latency table"):
        LatencyTable.load(tmp_path / "bad.json")


def test_fpga_table_by_hand(toy_device: Device, toy_units: UnitCostTable) -> None:
    model = FpgaCostModel(toy_device, AcceleratorConfig(lut_share=1.0), toy_units)
    table = fpga_latency_table(model, SHAPES, ["fixed-4", "fixed-8", "sp2-4"], act_bits=8)
    macs = SHAPES["conv"].macs
    # DSP array: 100 slices, 2 fixed-4 or 1 fixed-8 MACs each; LUT array: 960 SP2 units,
    # (10,000 LUTs less 4 per slice for the mode select between the two) / 10.
    assert table.get("conv", "fixed-4") == math.ceil(macs / 200)
    assert table.get("conv", "fixed-8") == math.ceil(macs / 100)
    assert table.get("conv", "sp2-4") == math.ceil(macs / 960)
    assert table.unit == "cycles" and table.source == "fpga:toy"
    assert table.metadata["clock_hz"] == 100e6
    assert table.layers == ("conv", "fc")


def test_fpga_table_on_a_real_device() -> None:
    model = FpgaCostModel("xc7z045")
    table = fpga_latency_table(model, SHAPES, ["fixed-4", "fixed-8"], act_bits=4)
    # 7-series packs two 4-bit weights per DSP48E1 at 4-bit activations and one 8-bit
    # weight, on 900 slices; at 8-bit activations two 4-bit fields no longer fit.
    macs = SHAPES["conv"].macs
    assert table.get("conv", "fixed-4") == math.ceil(macs / 1800)
    assert table.get("conv", "fixed-8") == math.ceil(macs / 900)
    table8 = fpga_latency_table(model, SHAPES, ["fixed-4"], act_bits=8)
    assert table8.get("conv", "fixed-4") == math.ceil(macs / 900)


def test_fpga_table_streams_weights_that_do_not_fit(
    toy_device: Device, toy_units: UnitCostTable
) -> None:
    # 600,000 weights: 2.4 Mb at 4 bits fits the toy's 3.69 Mb of BRAM, 4.8 Mb at 8 does not.
    shapes = {"fc": LayerShape("fc", "linear", 100, 6000, 1, 6000, 100)}
    model = FpgaCostModel(toy_device, units=toy_units)
    table = fpga_latency_table(model, shapes, ["fixed-4", "fixed-8"], act_bits=8)
    assert table.get("fc", "fixed-4") == math.ceil(600_000 / 200)  # compute: 100 slices x 2
    # 600,000 bytes at 1 GB/s and 100 MHz, 10 bytes a cycle, outlast 6,000 compute cycles.
    assert table.get("fc", "fixed-8") == 60_000
