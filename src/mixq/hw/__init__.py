"""Hardware cost models (no torch): weight bits, BOPs and size; FPGA cycles and resources
of a DSP + LUT accelerator with off-chip memory; the DSP packing rule; the MSP/RMSMP ratio
derivation; the fixed-point baseline that fills the fabric too; latency tables for the
ILP; images/s and weight KiB of a model for an accuracy-against-throughput plot.

>>> from mixq.hw import FpgaCostModel, derive_ratio
>>> best = derive_ratio(FpgaCostModel("xc7z020"), ["sp2-4", "fixed-4"], 4.0, act_bits=4)
>>> sorted(best.ratio.to_dict()) == ["fixed-4", "sp2-4"] and best.macs_per_cycle > 440
True

The CPU latency table (:mod:`mixq.hw.cpu_latency`) times torch layers and is imported on
its own.
"""

from mixq.hw.assumptions import Assumption, assumptions
from mixq.hw.baseline import FilledBaseline, filled_baseline, lut_fixed_units
from mixq.hw.cost import ComputeCostModel, CostModel
from mixq.hw.device import Device, available_devices, load_device
from mixq.hw.fpga import AcceleratorConfig, FpgaCostModel
from mixq.hw.from_model import plan_from_summary
from mixq.hw.latency import LatencyTable, fpga_latency_table
from mixq.hw.packing import DspPorts, Packing, dsp_packing
from mixq.hw.pareto import HardwarePoint, hardware_point
from mixq.hw.ratio_search import (
    RatioDerivation,
    balanced_lut_share,
    derive_ratio,
    mac_loads,
    throughput,
    throughput_curve,
)
from mixq.hw.report import CostReport, CostTotals, FpgaDesign, LayerCost, Resources
from mixq.hw.synthesis import UnitCostTable, load_unit_costs, parse_yosys_stat
from mixq.hw.units import MacUnit
from mixq.hw.workload import LayerWork, layer_work, uniform_plan

__all__ = [
    "AcceleratorConfig",
    "Assumption",
    "ComputeCostModel",
    "CostModel",
    "CostReport",
    "CostTotals",
    "Device",
    "DspPorts",
    "FilledBaseline",
    "FpgaCostModel",
    "FpgaDesign",
    "HardwarePoint",
    "LatencyTable",
    "LayerCost",
    "LayerWork",
    "MacUnit",
    "Packing",
    "RatioDerivation",
    "Resources",
    "UnitCostTable",
    "assumptions",
    "available_devices",
    "balanced_lut_share",
    "derive_ratio",
    "dsp_packing",
    "filled_baseline",
    "fpga_latency_table",
    "hardware_point",
    "layer_work",
    "load_device",
    "load_unit_costs",
    "lut_fixed_units",
    "mac_loads",
    "parse_yosys_stat",
    "plan_from_summary",
    "throughput",
    "throughput_curve",
    "uniform_plan",
]
