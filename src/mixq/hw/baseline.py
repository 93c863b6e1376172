"""The fixed-point baseline that fills the fabric too: DSP slices and LUT-built MACs.

MSP and RMSMP compare a mixed design (SP2 rows on a LUT array, fixed-point rows on DSPs)
against fixed-point on DSPs alone, which leaves the fabric the mixed design fills idle. The
fairer baseline spends the same ``lut_share`` of the fabric on fixed-point MACs built from
LUTs (their measured ``-nodsp`` cost), beside every DSP slice, so that both designs have
the same device. Only the plan's most-used fixed-point candidate gets LUT units (others,
such as the first and last layer at fixed-8, run on the DSP array alone, as in the mixed
design). Off-chip traffic is the same as :class:`~mixq.hw.fpga.FpgaCostModel`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mixq.errors import HardwareCostError
from mixq.hw.fpga import FpgaCostModel, ddr_bytes
from mixq.hw.workload import layer_work
from mixq.plan import LayerShape, Plan
from mixq.schemes import Candidate, Scheme


@dataclass(frozen=True)
class FilledBaseline:
    """Cycles of an all-fixed-point plan on DSP slices plus LUT-built MACs."""

    candidate: str  # the fixed-point candidate that also gets LUT units
    dsp_macs_per_cycle: int  # of that candidate, on the whole DSP array
    lut_units: int  # LUT-built MACs of that candidate
    cycles: int  # end to end, per sample

    @property
    def peak_macs_per_cycle(self) -> float:
        return self.dsp_macs_per_cycle + self.lut_units


def lut_fixed_units(model: FpgaCostModel, candidate: Candidate, act_bits: int) -> int:
    """How many LUT-built ``candidate`` MACs fit beside the DSP array in ``lut_share``.

    >>> model = FpgaCostModel("xc7z045")
    >>> lut_fixed_units(model, Candidate.parse("fixed-4"), 4)  # 60 LUTs each, less readout
    2535
    """
    slices = model.dsp_slices()
    budget = model.fabric_budget(model.dsp_overhead([candidate], act_bits), slices)
    unit = model.lut_unit(candidate, act_bits)
    room = [
        getattr(budget, r) / getattr(unit, r) for r in ("luts", "ffs", "carry") if getattr(unit, r)
    ]
    return max(0, math.floor(min(room) * model.config.lut_clock_ratio)) if room else 0


def filled_baseline(
    model: FpgaCostModel, shapes: Mapping[str, LayerShape], plan: Plan, *, act_bits: int = 8
) -> FilledBaseline:
    """End-to-end cycles of ``plan`` (fixed-point rows only) with the fabric filled."""
    works = layer_work(shapes, plan, act_bits)
    macs: dict[Candidate, int] = {}
    for work in works:
        for candidate in work.rows:
            if candidate.scheme is not Scheme.FIXED:
                raise HardwareCostError(f"the filled baseline is fixed-point only, not {candidate}")
            macs[candidate] = macs.get(candidate, 0) + work.candidate_macs(candidate)
    if not macs:
        raise HardwareCostError("the plan has no layer to cost")
    main = max(macs, key=lambda c: macs[c])
    design = model.design(works)  # DSP rates and off-chip traffic, as for the mixed design
    unit_bits = max(w.act_bits for w in works)
    units = lut_fixed_units(model, main, unit_bits)
    total = 0
    for work in works:
        compute = 0
        for candidate in work.rows:
            rate = design.dsp_rate(str(candidate), work.act_bits)
            rate += units if candidate == main else 0
            compute += math.ceil(work.candidate_macs(candidate) / rate)
        transfer = 0
        if design.ddr_bytes_per_cycle:
            traffic = ddr_bytes(work, design, model.device.bram_bits)
            transfer = math.ceil(traffic / design.ddr_bytes_per_cycle)
        total += max(compute, transfer)
    return FilledBaseline(str(main), design.dsp_macs_per_cycle[str(main)], units, total)
