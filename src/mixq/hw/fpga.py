"""FPGA cost model of a row-parallel accelerator with a DSP array and a LUT array.

The accelerator (MSP/RMSMP, SPEC sections 2 and 3) has two pools of multiply-accumulate
units that work at the same time on different rows of a layer:

* a **DSP array**: every DSP slice the design may use; rows of the fixed-point candidates
  run there, ``device.macs_per_dsp(weight_bits, act_bits)`` MACs per slice per cycle
  (two when the packing rule packs, else one), the activation bits being the layer's own
  (``dsp_packing="per-layer"``: a slice whose pre-adder forms the packed weight does one
  MAC with the high weight at 0) or the widest any DSP row meets (``"widest"``). The
  slices switch mode between candidates and layers, so the array works through a layer's
  fixed-point candidates one after another; a slice that does both modes needs a mode
  select at its readout (:func:`mode_select_luts`);
* a **LUT array** of shift-add units for SP2 and PoT rows: one array of units per
  candidate, each unit doing one MAC per cycle, sized from the measured cost of one unit
  (:mod:`mixq.hw.synthesis`) so that the LUTs, flip-flops and carry cells the arrays may
  take (``lut_share`` of the device) are filled in proportion to the plan's MACs.

One configuration serves every layer: a layer's compute cycles are those of the slower
array, so a layer whose ratio differs from the model-wide one leaves part of the hardware
idle. Work is taken to tile perfectly (every unit busy while its array has work).

Off-chip memory: when the model's weights (with the largest layer's activations) do not
fit in block RAM, every layer streams its weights from DDR for every sample (batch 1),
and a layer whose input and output do not fit streams those too; a layer then takes
``max(compute, transfer)`` cycles, transfer at the board's peak DDR bandwidth.

Every design choice that is not a device fact is a field of :class:`AcceleratorConfig`
and is listed, with its plausible range, by :func:`assumptions`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import get_args

from mixq.errors import HardwareCostError
from mixq.hw.cost import compute_layer_cost, unplanned
from mixq.hw.device import Device, load_device
from mixq.hw.packed_mac import PackedMac
from mixq.hw.packing import dsp_packing
from mixq.hw.report import CostReport, DspPackingRule, FpgaDesign, LayerCost, Resources
from mixq.hw.synthesis import CellCounts, UnitCostTable, load_unit_costs
from mixq.hw.units import MacUnit
from mixq.hw.workload import LayerWork, layer_work
from mixq.plan import LayerShape, Plan
from mixq.schemes import Candidate, Scheme

BRAM36_BITS = 36 * 1024
DSP_FABRIC_FAMILY = "xc7"  # see FpgaCostModel.dsp_overhead
_FABRIC = ("luts", "ffs", "carry")  # what the LUT array is built from
DSP_PACKINGS: tuple[DspPackingRule, ...] = get_args(DspPackingRule)
# Measured (Yosys 0.23, xc7; hardware/rtl/dual_mode_mac.v): the mode select costs one
# LUT3 per accumulator bit that the single mode reads above the packed low field.
MODE_SELECT_LUTS_PER_BIT = 1


@dataclass(frozen=True)
class AcceleratorConfig:
    """Design choices of the accelerator (not device facts); docs/hardware.md argues each."""

    # Share of the device's LUTs, flip-flops and carry cells the MAC arrays may take; the
    # rest is left to control, data movement and buffering logic (an assumption).
    lut_share: float = 0.7
    dsp_share: float = 1.0  # share of DSP slices in the DSP array
    dsp_schemes: tuple[Scheme, ...] = (Scheme.FIXED,)  # schemes that need multipliers
    # The LUT array's clock over the DSP array's (1: one clock for both designs).
    lut_clock_ratio: float = 1.0
    # LUTs per MAC lane (each LUT unit, each MAC of a DSP slice) for control, weight
    # delivery and requantisation, beyond the measured MAC itself (0: none).
    lane_overhead_luts: float = 0.0
    offchip_memory: bool = True  # model DDR traffic (False: compute only)
    # Which activation bits a DSP row's packing is chosen for: its own layer's
    # ("per-layer") or the widest any DSP row of the design meets ("widest", the model
    # before per-layer packing).
    dsp_packing: DspPackingRule = "per-layer"

    def __post_init__(self) -> None:
        if self.dsp_packing not in DSP_PACKINGS:
            raise HardwareCostError(
                f"dsp_packing must be one of {', '.join(DSP_PACKINGS)}, got {self.dsp_packing!r}"
            )
        for name in ("lut_share", "dsp_share"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise HardwareCostError(f"{name} must lie in (0, 1], got {value!r}")
        if not 0 < self.lut_clock_ratio <= 4:
            raise HardwareCostError(
                f"lut_clock_ratio must lie in (0, 4], got {self.lut_clock_ratio!r}"
            )
        if not 0 <= self.lane_overhead_luts < 1000:
            raise HardwareCostError(
                f"lane_overhead_luts must lie in [0, 1000), got {self.lane_overhead_luts!r}"
            )
        object.__setattr__(self, "dsp_schemes", tuple(Scheme(s) for s in self.dsp_schemes))


class FpgaCostModel:
    """Cycles and resources of a plan on a device (see the module docstring).

    >>> model = FpgaCostModel("xc7z020")
    >>> shapes = {"fc": LayerShape("fc", "linear", 100, 1000, 1, 1000, 100)}
    >>> plan = Plan.from_dict({"layers": {"fc": {"ratio": {"sp2-4": 0.5, "fixed-4": 0.5}}}})
    >>> report = model.cost(shapes, plan, act_bits=4)
    >>> design = report.design
    >>> design.dsp_macs_per_cycle, design.used.dsps
    ({'fixed-4': 440}, 220)
    >>> # 70% of the carry chain less 7 CARRY4s of packed readout per slice, 8 per SP2-4 unit
    >>> design.lut_units, (13300 * 7 // 10 - 220 * 7) // 8
    ({'sp2-4': 971}, 971)
    >>> layer = report.layers[0]  # 50,000 MACs each way: 440 per cycle on DSPs, 971 on LUTs
    >>> layer.dsp_cycles, layer.lut_cycles, layer.cycles
    (114, 52, 114)
    """

    name = "fpga"

    def __init__(
        self,
        device: Device | str,
        config: AcceleratorConfig | None = None,
        units: UnitCostTable | None = None,
    ) -> None:
        self.device = load_device(device) if isinstance(device, str) else device
        self.config = config or AcceleratorConfig()
        self.units = units or load_unit_costs()

    # -- what each candidate costs ------------------------------------------------------
    def on_dsp(self, candidate: Candidate) -> bool:
        return candidate.scheme in self.config.dsp_schemes

    def lut_unit(self, candidate: Candidate, act_bits: int) -> Resources:
        """What one LUT-array unit of ``candidate`` takes (measured, ``-nodsp``)."""
        unit = MacUnit(candidate, act_bits)
        counts = self.units.get(unit, self.device.synthesis_family, "lut").counts
        lane = self.config.lane_overhead_luts
        return Resources(luts=counts.luts + lane, ffs=counts.ffs, carry=counts.carry)

    def dsp_overhead(self, candidates: Sequence[Candidate], act_bits: int) -> Resources:
        """Fabric each DSP slice needs beside it to run ``candidates`` at ``act_bits``
        (see :meth:`slice_fabric`)."""
        return self.slice_fabric([(c, act_bits) for c in candidates])

    def slice_fabric(self, modes: Collection[tuple[Candidate, int]]) -> Resources:
        """Fabric each DSP slice needs beside it: the most any of ``modes`` (candidate,
        the activation bits its packing is chosen for) needs per slice, plus a mode
        select if some modes pack and some do not. A packed slice (two MACs) needs its
        measured readout (:mod:`mixq.hw.packed_mac`: the high field's sign correction);
        an unpacked one what its measured DSP-mapped unit needs (zero when the
        accumulator fits in the slice); each MAC lane adds ``lane_overhead_luts``.

        Measured for 7-series whatever the device: Yosys 0.23 puts the accumulator in a
        DSP48E1's P register but not in a DSP48E2's, although the DSP48E2 has the same
        48-bit accumulator (UG579), so the UltraScale+ figure is the tool's, not the
        silicon's. A unit that Yosys kept out of DSPs (a multiplier below its DSP
        threshold) counts as a DSP MAC without fabric, as a DSP array would run it.
        """
        overhead = Resources()
        for candidate, act_bits in modes:
            lanes = self.device.macs_per_dsp(candidate.bits, act_bits)
            if lanes > 1:
                counts = self._packed_readout(candidate, act_bits)
            else:
                counts = self.units.get(
                    MacUnit(candidate, act_bits), DSP_FABRIC_FAMILY, "dsp"
                ).counts
            per_slice = max(counts.dsps, 1)
            overhead = Resources(
                luts=max(
                    overhead.luts,
                    counts.luts / per_slice + lanes * self.config.lane_overhead_luts,
                ),
                ffs=max(overhead.ffs, counts.ffs / per_slice),
                carry=max(overhead.carry, counts.carry / per_slice),
            )
        select = mode_select_luts(self.device, modes)
        return replace(overhead, luts=overhead.luts + select)

    def packing_act_bits(self, layer_act_bits: int, widest: int) -> int:
        """The activation bits a DSP row's packing is chosen for (``dsp_packing``)."""
        return layer_act_bits if self.config.dsp_packing == "per-layer" else widest

    def _packed_readout(self, candidate: Candidate, act_bits: int) -> CellCounts:
        packed = self.units.packed
        key = PackedMac(candidate.bits, act_bits).key
        if key in packed:
            return packed[key]
        if self.device.dsp_packing is not None:
            # A packing the device file fixes (a what-if) borrows the widest measured
            # readout, or none if the table measured none (hand-made tables).
            widest = max(packed.values(), key=lambda c: (c.carry, c.luts), default=None)
            return widest or CellCounts.from_cells({"DSP48E1": 1})
        raise HardwareCostError(
            f"no packed-MAC measurement for {key} (have {', '.join(sorted(packed))}); "
            "run python hardware/packed_mac.py"
        )

    def dsp_slices(self) -> int:
        return math.floor(self.device.dsps * self.config.dsp_share)

    def fabric_budget(self, dsp_overhead: Resources, dsp_slices: int) -> Resources:
        """Fabric left for the LUT array once the DSP array's needs are met."""
        share = self.config.lut_share
        return Resources(
            luts=math.floor(self.device.luts * share) - dsp_slices * dsp_overhead.luts,
            ffs=math.floor(self.device.ffs * share) - dsp_slices * dsp_overhead.ffs,
            carry=math.floor(self.device.carry4 * share) - dsp_slices * dsp_overhead.carry,
        )

    # -- the design and the cost of each layer ------------------------------------------
    def design(self, works: Sequence[LayerWork]) -> FpgaDesign:
        """The arrays for these layers (see :meth:`design_for`)."""
        macs: dict[Candidate, int] = {}
        act_bits: dict[Candidate, set[int]] = {}
        for work in works:
            for candidate in work.rows:
                macs[candidate] = macs.get(candidate, 0) + work.candidate_macs(candidate)
                act_bits.setdefault(candidate, set()).add(work.act_bits)
        largest = max((_activation_bits(w) for w in works), default=0)
        on_chip = sum(w.weight_bits for w in works) + largest <= self.device.bram_bits
        design = self.design_for(
            macs,
            {c: max(bits) for c, bits in act_bits.items()},
            max((_bram36(w) for w in works), default=0),
            act_bits,
        )
        return replace(design, weights_on_chip=on_chip)

    def design_for(
        self,
        macs: Mapping[Candidate, float],
        act_bits: Mapping[Candidate, int],
        bram36: int = 0,
        dsp_act_bits: Mapping[Candidate, Collection[int]] | None = None,
    ) -> FpgaDesign:
        """All DSP slices (if a candidate needs one) and LUT-array units in proportion to
        each LUT candidate's share of ``macs``; each unit sized for its ``act_bits``.
        ``dsp_act_bits`` gives every activation width each DSP candidate's rows meet
        (default: its ``act_bits`` alone); the DSP array packs for each as
        ``dsp_packing`` says, and its readout fabric serves all of them."""
        on_dsp = [c for c in macs if self.on_dsp(c)]
        on_lut = [c for c in macs if not self.on_dsp(c) and macs[c] > 0]
        slices = self.dsp_slices() if on_dsp else 0
        layer_bits = {c: sorted({*(dsp_act_bits or {}).get(c, ()), act_bits[c]}) for c in on_dsp}
        widest = max((max(bits) for bits in layer_bits.values()), default=1)
        packed_for = {
            c: {a: self.packing_act_bits(a, widest) for a in bits} for c, bits in layer_bits.items()
        }
        overhead = self.slice_fabric({(c, p) for c, ps in packed_for.items() for p in ps.values()})
        units = self._lut_units(on_lut, macs, act_bits, self.fabric_budget(overhead, slices))
        lut_array = [
            _times(self.lut_unit(c, act_bits[c]), n) for c, n in zip(on_lut, units, strict=True)
        ]
        used = _total([_times(overhead, slices), *lut_array])
        used = replace(used, dsps=slices, bram36=bram36)
        by_act = {
            str(c): {a: slices * self.device.macs_per_dsp(c.bits, p) for a, p in ps.items()}
            for c, ps in packed_for.items()
        }
        return FpgaDesign(
            device=self.device.name,
            clock_mhz=self.device.clock_mhz,
            dsp_macs_per_cycle={key: rates[max(rates)] for key, rates in by_act.items()},
            dsp_macs_by_act=by_act,
            dsp_packing=self.config.dsp_packing,
            lut_units={str(c): u for c, u in zip(on_lut, units, strict=True)},
            unit_act_bits={str(c): act_bits[c] for c in macs},
            used=used,
            available=Resources(
                luts=self.device.luts,
                ffs=self.device.ffs,
                carry=self.device.carry4,
                dsps=self.device.dsps,
                bram36=self.device.bram36,
            ),
            lut_share=self.config.lut_share,
            dsp_share=self.config.dsp_share,
            lut_clock_ratio=self.config.lut_clock_ratio,
            ddr_bytes_per_cycle=(
                self.device.ddr_bytes_per_s / (self.device.clock_mhz * 1e6)
                if self.config.offchip_memory
                else None
            ),
        )

    def _lut_units(
        self,
        candidates: list[Candidate],
        macs: Mapping[Candidate, float],
        act_bits: Mapping[Candidate, int],
        budget: Resources,
    ) -> list[int]:
        if not candidates:
            return []
        total = sum(macs[c] for c in candidates)
        shares = [macs[c] / total for c in candidates]
        fabric = [self.lut_unit(c, act_bits[c]) for c in candidates]
        limits = []
        for resource in _FABRIC:
            room = getattr(budget, resource)
            per_mac = sum(s * getattr(f, resource) for s, f in zip(shares, fabric, strict=True))
            if room <= 0 and per_mac > 0:
                raise HardwareCostError(
                    f"{self.device.name}: no {resource} left for the LUT array "
                    f"(lut_share {self.config.lut_share}); raise lut_share or use DSP rows"
                )
            if per_mac > 0:
                limits.append(room / per_mac)
        mac_units = min(limits) if limits else 0.0
        return [max(1, math.floor(s * mac_units)) for s in shares]

    def layer_cost(self, work: LayerWork, design: FpgaDesign) -> LayerCost:
        dsp_cycles = 0
        lut_cycles = 0
        for candidate in work.rows:
            key = str(candidate)
            macs = work.candidate_macs(candidate)
            if key in design.dsp_macs_per_cycle:
                dsp_cycles += math.ceil(macs / design.dsp_rate(key, work.act_bits))
            elif key in design.lut_units:
                rate = design.lut_units[key] * design.lut_clock_ratio
                lut_cycles = max(lut_cycles, math.ceil(macs / rate))
            else:
                raise HardwareCostError(f"the design has no units for {key} (layer {work.name})")
        compute = max(dsp_cycles, lut_cycles)
        traffic = ddr_bytes(work, design, self.device.bram_bits)
        transfer = (
            math.ceil(traffic / design.ddr_bytes_per_cycle) if design.ddr_bytes_per_cycle else 0
        )
        cycles = max(compute, transfer)
        return replace(
            compute_layer_cost(work),
            cycles=cycles,
            dsp_cycles=dsp_cycles,
            lut_cycles=lut_cycles,
            latency_s=cycles / (design.clock_mhz * 1e6),
            bram36=_bram36(work),
            compute_cycles=compute,
            transfer_cycles=transfer if design.ddr_bytes_per_cycle else None,
            ddr_bytes=traffic if design.ddr_bytes_per_cycle else None,
        )

    def cost(
        self,
        shapes: Mapping[str, LayerShape],
        plan: Plan,
        *,
        act_bits: int = 8,
        model: str = "model",
    ) -> CostReport:
        works = layer_work(shapes, plan, act_bits)
        design = self.design(works)
        return CostReport(
            model=model,
            cost_model=self.name,
            layers=tuple(self.layer_cost(work, design) for work in works),
            design=design,
            unplanned=unplanned(shapes, plan),
            metadata={"device": self.device.to_dict(), "synthesis": self.units.tool},
        )


def mode_select_luts(device: Device, modes: Collection[tuple[Candidate, int]]) -> int:
    """LUTs per DSP slice for the readout's mode select, when some of ``modes``
    (candidate, the activation bits its packing is chosen for) pack two MACs and some
    one: the single mode reads the accumulator up to its full width, the packed mode the
    low field sign-extended, so every bit above the narrowest packed field takes a
    two-way multiplexer (one LUT3 each, measured: ``hardware/packed_mac.py``).

    >>> z7 = load_device("xc7z045")
    >>> fixed4, fixed8 = Candidate.parse("fixed-4"), Candidate.parse("fixed-8")
    >>> mode_select_luts(z7, [(fixed4, 4), (fixed4, 8)])  # 25-bit accumulator, 21-bit field
    4
    >>> mode_select_luts(z7, [(fixed4, 4), (fixed8, 8)]), mode_select_luts(z7, [(fixed4, 4)])
    (8, 0)
    """
    lanes = {(c, a): device.macs_per_dsp(c.bits, a) for c, a in modes}
    packed = [
        dsp_packing(device.dsp_ports, c.bits, a).spacing for (c, a), n in lanes.items() if n > 1
    ]
    single = [MacUnit(c, a).acc_bits for (c, a), n in lanes.items() if n == 1]
    if not packed or not single:
        return 0
    return max(0, max(single) - min(packed)) * MODE_SELECT_LUTS_PER_BIT


def _times(resources: Resources, count: float) -> Resources:
    return Resources(**{k: v * count for k, v in resources.to_dict().items()})


def _total(parts: Sequence[Resources]) -> Resources:
    return Resources(**{k: sum(getattr(p, k) for p in parts) for k in Resources().to_dict()})


def _activation_bits(work: LayerWork) -> int:
    shape = work.shape
    return (shape.input_elements + shape.output_elements) * work.act_bits


def ddr_bytes(work: LayerWork, design: FpgaDesign, bram_bits: int) -> int:
    """Off-chip bytes per sample: the weights unless the design keeps every layer's on
    chip, and the input and output if they do not fit in block RAM beside the weights."""
    weights = 0 if design.weights_on_chip else work.weight_bits
    resident = work.weight_bits if design.weights_on_chip else 0
    acts = _activation_bits(work)
    moved = weights + (acts if acts + resident > bram_bits else 0)
    return math.ceil(moved / 8)


def _bram36(work: LayerWork) -> int:
    """Blocks to hold the layer's weights, input and output at once (output at the same
    activation bits as the input, as the next layer reads it)."""
    shape = work.shape
    bits = work.weight_bits + (shape.input_elements + shape.output_elements) * work.act_bits
    return math.ceil(bits / BRAM36_BITS)
