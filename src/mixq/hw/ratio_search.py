"""The MSP/RMSMP offline step: the ratio of candidates that maximises FPGA throughput.

At shares ``s_c`` (one ratio for every layer), one MAC per cycle takes, of each resource,

* DSP slices: ``sum over fixed-point c of s_c / (N * p_c)`` of the DSP array
  (``N`` slices, ``p_c`` MACs per slice per cycle for ``c``'s bits);
* LUTs, flip-flops, carry cells: ``sum over SP2/PoT c of s_c * unit_c / budget``, with
  ``unit_c`` the measured cost of one shift-add unit and ``budget`` what the design may
  take of the device.

Throughput is ``1 / max(loads)`` MACs per cycle, which :func:`derive_ratio` maximises
under an equivalent-bit budget (``sum s_c * bits_c = budget``) as a linear programme:
minimise ``t`` subject to ``load_r(s) <= t`` for every resource ``r``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linprog

from mixq.errors import HardwareCostError
from mixq.hw.fpga import FpgaCostModel
from mixq.ratio import Ratio
from mixq.schemes import Candidate

_TOLERANCE = 1e-9


def mac_loads(
    model: FpgaCostModel, shares: Mapping[Candidate | str, float], act_bits: int
) -> dict[str, float]:
    """The share of each resource that one MAC per cycle takes at ``shares``."""
    parsed = {Candidate.parse(c): float(s) for c, s in shares.items()}
    matrix = _load_matrix(model, list(parsed), act_bits)
    weights = np.array(list(parsed.values()))
    return {resource: float(row @ weights) for resource, row in matrix.items()}


def throughput(
    model: FpgaCostModel, shares: Mapping[Candidate | str, float], act_bits: int
) -> float:
    """Peak MACs per cycle with every layer at ``shares``."""
    loads = mac_loads(model, shares, act_bits)
    worst = max(loads.values())
    return 1.0 / worst if worst > 0 else float("inf")


@dataclass(frozen=True)
class RatioDerivation:
    """The best ratio for a device and bit budget, and what limits it."""

    device: str
    act_bits: int
    bit_budget: float  # equivalent bits the ratio must have
    ratio: Ratio
    macs_per_cycle: float
    gops: float  # 2 operations per MAC at the device's clock
    loads: Mapping[str, float] = field(default_factory=dict)  # resource -> share in use

    @property
    def binding(self) -> list[str]:
        """The resources the optimum uses up."""
        top = max(self.loads.values())
        return [r for r, load in self.loads.items() if load >= top * (1 - 1e-6)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "act_bits": self.act_bits,
            "bit_budget": self.bit_budget,
            "ratio": self.ratio.to_dict(),
            "macs_per_cycle": self.macs_per_cycle,
            "gops": self.gops,
            "loads": dict(self.loads),
            "binding": self.binding,
        }


def derive_ratio(
    model: FpgaCostModel,
    candidates: Sequence[Candidate | str],
    bit_budget: float,
    *,
    act_bits: int = 4,
) -> RatioDerivation:
    """The shares of ``candidates`` with ``bit_budget`` equivalent bits that maximise
    throughput on ``model``'s device (an exact linear programme; see the module docstring).

    >>> model = FpgaCostModel("xc7z045")
    >>> best = derive_ratio(model, ["sp2-4", "fixed-4", "fixed-8"], 4.2, act_bits=4)
    >>> round(best.ratio.to_dict()["fixed-8"], 3), best.binding
    (0.05, ['dsps', 'carry'])
    """
    parsed = [Candidate.parse(c) for c in candidates]
    if len(set(parsed)) != len(parsed) or not parsed:
        raise HardwareCostError(f"candidates must be distinct and non-empty, got {candidates}")
    bits = np.array([c.bits for c in parsed], dtype=float)
    if not bits.min() - _TOLERANCE <= bit_budget <= bits.max() + _TOLERANCE:
        raise HardwareCostError(
            f"a bit budget of {bit_budget} is outside what {', '.join(map(str, parsed))} "
            f"can average ({bits.min():g}..{bits.max():g} bits)"
        )
    matrix = _load_matrix(model, parsed, act_bits)
    n = len(parsed)
    # Variables: the shares, then t (the largest load); minimise t.
    a_ub = np.array([[*row, -1.0] for row in matrix.values()])
    a_eq = np.array([[*np.ones(n), 0.0], [*bits, 0.0]])
    solution = linprog(
        c=[*np.zeros(n), 1.0],
        A_ub=a_ub,
        b_ub=np.zeros(len(matrix)),
        A_eq=a_eq,
        b_eq=[1.0, bit_budget],
        bounds=[(0.0, 1.0)] * n + [(0.0, None)],
        method="highs",
    )
    if not solution.success:
        raise HardwareCostError(f"no ratio meets the bit budget {bit_budget}: {solution.message}")
    shares = np.clip(solution.x[:n], 0.0, 1.0)
    shares = shares / shares.sum()
    ratio = Ratio(tuple((c, float(s)) for c, s in zip(parsed, shares, strict=True)))
    loads = {r: float(row @ shares) for r, row in matrix.items()}
    macs = 1.0 / max(loads.values())
    return RatioDerivation(
        device=model.device.name,
        act_bits=act_bits,
        bit_budget=bit_budget,
        ratio=ratio,
        macs_per_cycle=macs,
        gops=2 * macs * model.device.clock_mhz / 1e3,
        loads=loads,
    )


def throughput_curve(
    model: FpgaCostModel,
    lut_candidate: Candidate | str,
    low: Candidate | str,
    high: Candidate | str,
    bit_budget: float,
    *,
    act_bits: int = 4,
    points: int = 101,
) -> tuple[np.ndarray, np.ndarray]:
    """Throughput (MACs/cycle) against the share of ``lut_candidate`` rows.

    ``high``'s share is what the bit budget asks for when ``lut_candidate`` and ``low``
    have the same bits; ``low`` takes the rest. Returns ``(sp2_shares, macs_per_cycle)``.
    """
    lut_c, low_c, high_c = (Candidate.parse(c) for c in (lut_candidate, low, high))
    high_share = _high_share(lut_c, low_c, high_c, bit_budget)
    sp2 = np.linspace(0.0, 1.0 - high_share, points)
    macs = np.array(
        [
            throughput(model, {lut_c: s, low_c: 1.0 - high_share - s, high_c: high_share}, act_bits)
            for s in sp2
        ]
    )
    return sp2, macs


def balanced_lut_share(
    lut_units: float, dsp_macs_low: float, dsp_macs_high: float, high_share: float
) -> float:
    """The analytical optimum: the LUT-candidate share at which both arrays finish together.

    With ``U`` LUT-array units, a DSP array giving ``D_l`` (``D_h``) MACs per cycle to the
    low (high) precision and ``h`` of the rows at high precision, the LUT array takes
    ``s / U`` cycles per MAC and the DSP array ``(1 - h - s) / D_l + h / D_h``; they are
    equal at ``s* = ((1 - h) / D_l + h / D_h) / (1 / U + 1 / D_l)`` (clipped to the range).

    >>> balanced_lut_share(lut_units=300, dsp_macs_low=100, dsp_macs_high=100, high_share=0)
    0.75
    """
    low = 1.0 - high_share
    best = (low / dsp_macs_low + high_share / dsp_macs_high) / (1 / lut_units + 1 / dsp_macs_low)
    return float(min(max(best, 0.0), low))


def _high_share(lut_c: Candidate, low: Candidate, high: Candidate, bit_budget: float) -> float:
    if lut_c.bits != low.bits or high.bits <= low.bits:
        raise HardwareCostError(
            f"the curve needs {lut_c} and {low} of equal bits and {high} of more bits"
        )
    share = (bit_budget - low.bits) / (high.bits - low.bits)
    if not -_TOLERANCE <= share <= 1 + _TOLERANCE:
        raise HardwareCostError(f"bit budget {bit_budget} is outside {low.bits}..{high.bits}")
    return min(max(share, 0.0), 1.0)


def _load_matrix(
    model: FpgaCostModel, candidates: Sequence[Candidate], act_bits: int
) -> dict[str, np.ndarray]:
    """For each resource, the share of it one MAC per cycle of each candidate takes."""
    on_dsp = [c for c in candidates if model.on_dsp(c)]
    slices = model.dsp_slices() if on_dsp else 0
    budget = model.fabric_budget(model.dsp_overhead(on_dsp, act_bits), slices)
    rows: dict[str, np.ndarray] = {}
    if on_dsp:
        rows["dsps"] = np.array(
            [
                1.0 / (slices * model.device.macs_per_dsp(c.bits, act_bits)) if c in on_dsp else 0.0
                for c in candidates
            ]
        )
    for resource in ("luts", "ffs", "carry"):
        room = getattr(budget, resource)
        need = np.array(
            [
                0.0 if c in on_dsp else getattr(model.lut_unit(c, act_bits), resource)
                for c in candidates
            ]
        )
        if need.any():
            if room <= 0:
                raise HardwareCostError(f"{model.device.name}: no {resource} left for LUT units")
            # A LUT array on a faster (slower) clock does more (fewer) MACs per DSP cycle.
            rows[resource] = need / room / model.config.lut_clock_ratio
    return rows
