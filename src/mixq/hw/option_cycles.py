"""Per-layer cycles of each allocation option on one fixed accelerator: the FPGA
throughput budget of the ILP (:class:`mixq.allocation.fpga_budget.FpgaThroughput`).

:class:`~mixq.hw.fpga.FpgaCostModel` sizes its arrays from the plan it costs, so a plan's
cycles are not a sum of per-layer terms that an ILP could weigh before the plan exists.
A built accelerator (one bitstream) is fixed, though: :func:`design_point` sizes it once
for every candidate the options may use, and on that design each layer's cycles depend on
its own choice alone, ``max(compute, transfer)`` as the cost model has it, apart from one
model-wide switch: whether every weight fits in block RAM (then nothing streams; else
every layer streams its weights). :func:`option_cycles` gives both figures per option;
:func:`plan_on_design` costs a whole plan on the fixed design, the check of the ILP's
choice.

>>> from mixq.plan import LayerShape
>>> from mixq.schemes import Candidate
>>> model = FpgaCostModel("xc7z020")
>>> fixed4, sp24 = Candidate.parse("fixed-4"), Candidate.parse("sp2-4")
>>> design = design_point(model, {fixed4: 4, sp24: 4})
>>> shape = LayerShape("fc", "linear", 100, 1000, 1, 1000, 100)
>>> option_cycles(model, design, shape, {fixed4: 50, sp24: 50}, 4, weights_on_chip=True)
114
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import replace

from mixq.errors import HardwareCostError
from mixq.hw.fpga import FpgaCostModel
from mixq.hw.report import CostReport, FpgaDesign
from mixq.hw.workload import LayerWork, layer_work
from mixq.plan import LayerShape, Plan
from mixq.schemes import Candidate


def design_point(
    model: FpgaCostModel,
    act_bits: Mapping[Candidate, int | Collection[int]],
    mac_shares: Mapping[Candidate, float] | None = None,
) -> FpgaDesign:
    """The accelerator for these candidates: every DSP slice if any candidate needs one,
    the LUT array split between the LUT candidates in proportion to ``mac_shares``
    (equal shares by default; with one LUT candidate it takes the whole array), each
    candidate's units sized for the widest of its ``act_bits`` (one width, or every width
    its layers take: the DSP array packs for each as ``dsp_packing`` says). This is the
    design :meth:`FpgaCostModel.design` builds for a plan that uses exactly these
    candidates at these activation bits (and these MAC shares)."""
    if not act_bits:
        raise HardwareCostError("a design point needs at least one candidate")
    shares = dict(mac_shares) if mac_shares is not None else dict.fromkeys(act_bits, 1.0)
    missing = [str(c) for c in act_bits if c not in shares]
    if missing:
        raise HardwareCostError(f"mac_shares gives no share for {', '.join(missing)}")
    bad = {str(c): s for c, s in shares.items() if not (math.isfinite(s) and s > 0)}
    if bad:
        raise HardwareCostError(f"mac_shares must be finite and > 0, got {bad}")
    widths = {c: {b} if isinstance(b, int) else set(b) for c, b in act_bits.items()}
    empty = [str(c) for c, bits in widths.items() if not bits]
    if empty:
        raise HardwareCostError(f"no activation bits given for {', '.join(empty)}")
    return model.design_for(
        {c: shares[c] for c in act_bits}, {c: max(b) for c, b in widths.items()}, 0, widths
    )


def onchip_weight_bits(model: FpgaCostModel, largest_act_bits: int) -> int:
    """Block RAM bits left for weights beside ``largest_act_bits`` (the largest layer's
    input and output bits): the weights stay on chip iff their bits are at most this."""
    return model.device.bram_bits - largest_act_bits


def largest_activation_bits(shapes: Mapping[str, LayerShape], act_bits: Mapping[str, int]) -> int:
    """The largest layer's input plus output bits, as :meth:`FpgaCostModel.design` counts
    them for the on-chip test."""
    return max(
        ((s.input_elements + s.output_elements) * act_bits[n] for n, s in shapes.items()),
        default=0,
    )


def option_cycles(
    model: FpgaCostModel,
    design: FpgaDesign,
    shape: LayerShape,
    rows: Mapping[Candidate, int],
    act_bits: int,
    *,
    weights_on_chip: bool,
) -> int:
    """Cycles of one layer with ``rows`` per candidate on ``design``:
    ``max(compute, transfer)`` as :meth:`FpgaCostModel.layer_cost` computes it, the
    weights streamed from DDR unless ``weights_on_chip``."""
    work = LayerWork(shape, act_bits, rows)
    cycles = model.layer_cost(work, replace(design, weights_on_chip=weights_on_chip)).cycles
    return int(cycles or 0)


def plan_on_design(
    model: FpgaCostModel,
    design: FpgaDesign,
    shapes: Mapping[str, LayerShape],
    plan: Plan,
    *,
    act_bits: int = 8,
) -> CostReport:
    """The cost of ``plan`` on the fixed ``design`` (not re-sized to the plan): each
    layer's cycles on that design, the weights on chip iff the plan's weights and its
    largest layer's activations fit in block RAM, as :meth:`FpgaCostModel.design` decides."""
    works = layer_work(shapes, plan, act_bits)
    largest = max(
        ((w.shape.input_elements + w.shape.output_elements) * w.act_bits for w in works),
        default=0,
    )
    on_chip = sum(w.weight_bits for w in works) + largest <= model.device.bram_bits
    fixed = replace(design, weights_on_chip=on_chip)
    return CostReport(
        model="model",
        cost_model="fpga-fixed-design",
        layers=tuple(model.layer_cost(work, fixed) for work in works),
        design=fixed,
        metadata={"device": model.device.to_dict(), "synthesis": model.units.tool},
    )
