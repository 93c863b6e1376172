"""The design assumptions behind every FPGA figure, named with the range they may take.

A gain the model reports holds only under these; the benchmark sweeps each over its range
(``benchmarks/fpga_cost.py``, ``kind: "sensitivity"`` rows) and every result records them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixq.hw.device import Device
from mixq.hw.fpga import AcceleratorConfig


@dataclass(frozen=True)
class Assumption:
    name: str  # the AcceleratorConfig or device field
    value: Any  # what the figures use
    plausible: tuple[Any, ...]  # the range the sensitivity sweep covers
    meaning: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "plausible": list(self.plausible)}


def assumptions(config: AcceleratorConfig, device: Device) -> list[Assumption]:
    """What ``config`` on ``device`` assumes.

    >>> from mixq.hw.device import load_device
    >>> [a.name for a in assumptions(AcceleratorConfig(), load_device("xc7z045"))]
    ... # doctest: +NORMALIZE_WHITESPACE
    ['clock_mhz', 'lut_clock_ratio', 'lut_share', 'lane_overhead_luts', 'ddr_gb_per_s',
     'dsp_packing', 'dsp_share']
    """
    return [
        Assumption(
            "clock_mhz",
            device.clock_mhz,
            (device.clock_mhz,),
            "one design clock; images/s scale with it, ratios do not",
        ),
        Assumption(
            "lut_clock_ratio",
            config.lut_clock_ratio,
            (0.6, 0.8, 1.0),
            "the LUT array's clock over the DSP array's: one clock for both designs (1.0); "
            "un-pipelined shift-add units in fabric may close timing lower than DSP48s",
        ),
        Assumption(
            "lut_share",
            config.lut_share,
            (0.3, 0.5, 0.7, 0.9),
            "share of LUTs, flip-flops and carry cells the MAC arrays take; the rest is "
            "left to control, buffers and data movement",
        ),
        Assumption(
            "lane_overhead_luts",
            config.lane_overhead_luts,
            (0, 10, 20, 40),
            "LUTs per MAC lane (each LUT unit, each MAC of a DSP slice) for control, weight "
            "delivery and requantisation beyond the measured MAC: none (0) by default",
        ),
        Assumption(
            "ddr_gb_per_s",
            device.ddr_gb_per_s if config.offchip_memory else None,
            (2.1, 4.26, 8.5) if config.offchip_memory else (),
            "the board's peak off-chip bandwidth, reached by every transfer (None: off-chip "
            "memory not modelled)",
        ),
        Assumption(
            "dsp_packing",
            config.dsp_packing,
            ("per-layer", "widest"),
            "which activation bits a DSP row's packing is chosen for: its own layer's "
            "(per-layer: a slice packs two MACs where that layer's widths allow and runs one, "
            "high weight 0, elsewhere, a mode select at its readout) or the widest any DSP "
            "row meets (widest: one packing for the whole array, the model before)",
        ),
        Assumption("dsp_share", config.dsp_share, (config.dsp_share,), "share of DSP slices used"),
    ]
