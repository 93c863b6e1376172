"""An FPGA throughput budget for the ILPs: images/s at least a target on one device.

Torch-free. The accelerator is fixed before the ILP chooses
(:func:`mixq.hw.option_cycles.design_point`: every DSP slice, the LUT array for the LUT
candidates the options use), so that each layer's cycles depend on its own option only:
``max(compute, transfer)`` per (layer, option), evaluated exactly by the FPGA cost model
before the solve. The per-layer maximum therefore needs no linearisation: each binary of
the ILP picks a whole layer configuration, whose maximum is a constant.

One term is not per layer: the weights stay in block RAM only if all of them (with the
largest layer's activations) fit, and otherwise every layer streams its weights from DDR.
The ILP handles it exactly by two cases (:func:`throughput_cases`): weights on chip
(the cycles without weight traffic, and total weight bits within the on-chip capacity)
and weights streamed (the cycles with weight traffic, no capacity limit; a plan that
fits anyway only runs faster than counted). The best plan of the two is the optimum.

>>> spec = FpgaThroughput.parse("xc7z045:5000")
>>> spec.device, spec.images_per_s
('xc7z045', 5000.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixq.allocation.options import CandidateOption, PerturbationTable
from mixq.errors import AllocationError, MixqError
from mixq.hw.fpga import AcceleratorConfig, FpgaCostModel
from mixq.hw.option_cycles import (
    design_point,
    largest_activation_bits,
    onchip_weight_bits,
    option_cycles,
)
from mixq.hw.report import FpgaDesign
from mixq.schemes import Candidate

CYCLES = "fpga_cycles"  # the limited quantity: cycles per image, layers one after another
ONCHIP_BITS = "fpga_onchip_weight_bits"  # total weight bits, limited in the on-chip case


@dataclass(frozen=True)
class FpgaThroughput:
    """At least ``images_per_s`` (batch 1) modelled on ``device`` (a bundled device name
    or a device YAML path), on the accelerator :func:`mixq.hw.option_cycles.design_point`
    builds for the options' candidates; ``mac_shares`` splits the LUT array between LUT
    candidates (equal by default; irrelevant with one LUT candidate)."""

    device: str
    images_per_s: float
    config: AcceleratorConfig = field(default_factory=AcceleratorConfig)
    mac_shares: Mapping[str, float] | None = None  # candidate -> share of the LUT array

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not self.device:
            raise AllocationError(f"an FPGA budget needs a device name, got {self.device!r}")
        target = self.images_per_s
        if isinstance(target, bool) or not isinstance(target, int | float):
            raise AllocationError(f"FPGA images/s target must be a number, got {target!r}")
        if not math.isfinite(target) or target <= 0:
            raise AllocationError(f"FPGA images/s target must be finite and > 0, got {target}")
        object.__setattr__(self, "images_per_s", float(target))
        if self.mac_shares is not None:
            shares = {str(Candidate.parse(c)): float(s) for c, s in self.mac_shares.items()}
            object.__setattr__(self, "mac_shares", shares)

    @classmethod
    def parse(cls, text: str) -> FpgaThroughput:
        """``"<device>:<images per second>"``, e.g. ``"xc7z045:5000"``."""
        device, sep, value = text.rpartition(":")
        try:
            target = float(value)
        except ValueError:
            target = math.nan
        if not sep or not device or not math.isfinite(target):
            raise AllocationError(f"FPGA budget {text!r}: write DEVICE:IMAGES_PER_S")
        return cls(device, target)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "images_per_s": self.images_per_s,
            "config": {
                "lut_share": self.config.lut_share,
                "dsp_share": self.config.dsp_share,
                "dsp_schemes": [s.value for s in self.config.dsp_schemes],
                "lut_clock_ratio": self.config.lut_clock_ratio,
                "lane_overhead_luts": self.config.lane_overhead_luts,
                "offchip_memory": self.config.offchip_memory,
                "dsp_packing": self.config.dsp_packing,
            },
            "mac_shares": dict(self.mac_shares) if self.mac_shares is not None else None,
        }


@dataclass(frozen=True)
class ThroughputCosts:
    """Per layer, the cycles of each option (in the layer's option order) on the fixed
    design, with the weights on chip and streamed; and the limits."""

    target_images_per_s: float
    on_chip: Mapping[str, np.ndarray]
    streamed: Mapping[str, np.ndarray]
    limit_cycles: int  # the most cycles per image that meet the target
    onchip_capacity_bits: int  # weights stay on chip iff their total bits are at most this
    clock_hz: float
    design: FpgaDesign

    def images_per_s(self, cycles: float) -> float:
        return self.clock_hz / cycles if cycles else math.inf


def throughput_costs(
    spec: FpgaThroughput, table: PerturbationTable, act_bits: Mapping[str, int]
) -> ThroughputCosts:
    """Cycles of every (layer, option) of ``table`` on ``spec``'s device and design."""
    low = {n: b for n, b in act_bits.items() if b < 1}
    if low:
        raise AllocationError(
            f"an FPGA throughput budget needs integer activations (act_bits >= 1): {low}"
        )
    try:
        model = FpgaCostModel(spec.device, spec.config)
        # Every activation width each candidate meets: the DSP array packs per layer
        # (AcceleratorConfig.dsp_packing), so each (layer, option) keeps its own rate.
        candidate_act_bits: dict[Candidate, set[int]] = {}
        for name, layer in table.layers.items():
            for option in layer.options:
                for candidate in option.ratio.candidates:
                    candidate_act_bits.setdefault(candidate, set()).add(act_bits[name])
        shares = None
        if spec.mac_shares is not None:
            shares = {c: spec.mac_shares.get(str(c), 0.0) for c in candidate_act_bits}
        design = design_point(model, candidate_act_bits, shares)
        per_layer: dict[bool, dict[str, np.ndarray]] = {True: {}, False: {}}
        for name, layer in table.layers.items():
            for on_chip, values in per_layer.items():
                values[name] = np.array(
                    [
                        option_cycles(
                            model,
                            design,
                            layer.shape,
                            _rows(option, layer.shape.rows),
                            act_bits[name],
                            weights_on_chip=on_chip,
                        )
                        for option in layer.options
                    ],
                    dtype=np.float64,
                )
    except AllocationError:
        raise
    except MixqError as exc:  # an unknown device, a candidate the model cannot cost
        raise AllocationError(f"FPGA budget on {spec.device!r}: {exc}") from None
    clock_hz = model.device.clock_mhz * 1e6
    shapes = {name: layer.shape for name, layer in table.layers.items()}
    return ThroughputCosts(
        target_images_per_s=spec.images_per_s,
        on_chip=per_layer[True],
        streamed=per_layer[False],
        limit_cycles=_most_cycles(clock_hz, spec.images_per_s),
        onchip_capacity_bits=onchip_weight_bits(model, largest_activation_bits(shapes, act_bits)),
        clock_hz=clock_hz,
        design=design,
    )


def _most_cycles(clock_hz: float, images_per_s: float) -> int:
    """The most whole cycles per image whose images/s (``clock_hz / cycles``, as the cost
    model divides) is still at least the target, robust to the rounding of the division.

    >>> _most_cycles(200e6, 200e6 / 8891)
    8891
    """
    cycles = math.floor(clock_hz / images_per_s)
    while clock_hz / (cycles + 1) >= images_per_s:
        cycles += 1
    while cycles > 0 and clock_hz / cycles < images_per_s:
        cycles -= 1
    return cycles


def _rows(option: CandidateOption, rows: int) -> dict[Candidate, int]:
    """Rows per candidate as the plan will give them (its assignment, else the ratio's)."""
    if option.assignment is not None:
        return dict(option.assignment.counts())
    return dict(option.ratio.row_counts(rows))
