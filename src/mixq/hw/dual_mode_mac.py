"""One DSP slice that packs two MACs on some layers and does one on others
(``hardware/rtl/dual_mode_mac.v``): the per-layer packing of :mod:`mixq.hw.fpga`, checked
bit for bit with Icarus Verilog, and its mode select measured in Yosys.

Packed dot products (4-bit activations, say) must give both fields exactly, single ones
(8-bit activations, the high weight 0) the whole dot product at the single mode's
accumulator width; the mode changes with a clear. The stimulus has every weight pair
times every packed activation, every weight times every single activation, the longest
accumulations the guard bits promise in both modes, and random dot products of random
mode and length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixq.errors import HardwareCostError
from mixq.hw.packed_mac import module_cells, synthesise_module
from mixq.hw.packing import DSP48E1, DspPorts, dsp_packing
from mixq.hw.rtl_sim import (
    Port,
    replay,
    require_icarus,
    running_sum,
    yosys_cells_library,
)
from mixq.hw.synthesis import CellCounts
from mixq.hw.units import ACC_GUARD_BITS, MacUnit
from mixq.schemes import Candidate

MODULE = "dual_mode_mac"


@dataclass(frozen=True)
class DualModeMac:
    """``weight_bits`` fixed-point weights, two per slice at ``packed_act_bits``, one at
    ``single_act_bits``.

    >>> unit = DualModeMac(4, 4, 8)
    >>> unit.spacing, unit.single_bits, unit.mode_select_bits
    (21, 25, 4)
    """

    weight_bits: int
    packed_act_bits: int
    single_act_bits: int
    ports: DspPorts = DSP48E1

    def __post_init__(self) -> None:
        if dsp_packing(self.ports, self.weight_bits, self.packed_act_bits).macs != 2:
            raise HardwareCostError(
                f"{self.weight_bits}-bit weights do not pack at {self.packed_act_bits}-bit "
                "activations"
            )
        if self.single_act_bits + 1 > self.ports.multiplier_bits:
            raise HardwareCostError(f"{self.single_act_bits}-bit activations exceed the port")

    @property
    def key(self) -> str:
        return f"dual-fixed-{self.weight_bits}/a{self.packed_act_bits}+a{self.single_act_bits}"

    @property
    def spacing(self) -> int:
        return dsp_packing(self.ports, self.weight_bits, self.packed_act_bits).spacing

    @property
    def single_bits(self) -> int:
        """The single mode's accumulator: its product's bits plus the guard bits."""
        return MacUnit(Candidate.parse(f"fixed-{self.weight_bits}"), self.single_act_bits).acc_bits

    @property
    def mode_select_bits(self) -> int:
        """Bits of the single output above the packed low field: each needs a select."""
        return max(0, self.single_bits - self.spacing)

    def parameters(self) -> dict[str, int]:
        return {
            "A_BITS": self.single_act_bits,
            "W_BITS": self.weight_bits,
            "SHIFT": self.spacing,
            "SINGLE_BITS": max(self.single_bits, self.spacing),
            "PRE_BITS": self.ports.preadd_bits,
            "P_BITS": self.ports.accumulator_bits,
        }


@dataclass(frozen=True, eq=False)
class DualStimulus:
    clear: np.ndarray  # (cycles,) bool
    enable: np.ndarray  # (cycles,) bool
    single: np.ndarray  # (cycles,) bool: the mode of the cycle's dot product
    act: np.ndarray  # (cycles,) int
    w_hi: np.ndarray  # (cycles,) signed int (0 in single mode)
    w_lo: np.ndarray  # (cycles,) signed int

    @property
    def cycles(self) -> int:
        return int(self.act.size)


def dual_stimulus(
    unit: DualModeMac, random_cycles: int = 5000, seed: int = 0, longest: int = 2**ACC_GUARD_BITS
) -> DualStimulus:
    """Both sweeps, the longest runs of largest products in both modes, random cycles."""
    top = 2 ** (unit.weight_bits - 1) - 1
    w = np.arange(-top, top + 1, dtype=np.int64)
    packed_acts = np.arange(2**unit.packed_act_bits, dtype=np.int64)
    single_acts = np.arange(2**unit.single_act_bits, dtype=np.int64)
    # (clear, enable, act, w_hi, w_lo, single) per part
    parts: list[tuple[np.ndarray, ...]] = []
    hi, lo, act = (g.ravel() for g in np.meshgrid(w, w, packed_acts, indexing="ij"))
    every = np.ones(hi.size, dtype=bool)
    parts.append((np.arange(hi.size) % 64 == 0, every, act, hi, lo, ~every))
    lo, act = (g.ravel() for g in np.meshgrid(w, single_acts, indexing="ij"))
    every = np.ones(lo.size, dtype=bool)
    parts.append((np.arange(lo.size) % 64 == 0, every, act, 0 * lo, lo, every))
    first = np.arange(longest + 1) == 0
    full = np.ones(longest + 1, dtype=np.int64)
    for s_hi, s_lo in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        a = full * packed_acts[-1]
        parts.append((first, full > 0, a, full * s_hi * top, full * s_lo * top, full < 0))
    for sign in (1, -1):
        a = full * single_acts[-1]
        parts.append((first, full > 0, a, 0 * full, full * sign * top, full > 0))
    clear, enable, act, w_hi, w_lo, single = (np.concatenate(c) for c in zip(*parts, strict=True))
    rng = np.random.default_rng(seed)
    r_clear = (rng.random(random_cycles) < 2e-3) | (np.arange(random_cycles) == 0)
    r_single = (rng.random(int(r_clear.sum())) < 0.5)[np.cumsum(r_clear) - 1]
    r_act = np.where(
        r_single,
        rng.integers(0, single_acts.size, random_cycles),
        rng.integers(0, packed_acts.size, random_cycles),
    )
    r_hi = np.where(r_single, 0, rng.choice(w, random_cycles))
    return DualStimulus(
        np.concatenate([clear, r_clear]),
        np.concatenate([enable, rng.random(random_cycles) < 0.9]),
        np.concatenate([single, r_single]).astype(bool),
        np.concatenate([act, r_act]),
        np.concatenate([w_hi, r_hi]),
        np.concatenate([w_lo, rng.choice(w, random_cycles)]),
    )


def expected_outputs(stim: DualStimulus) -> tuple[np.ndarray, np.ndarray]:
    """The high and low dot products after each clock edge (cleared to 0, else plus the
    products); in single mode the low one is the whole dot product."""
    hi, lo = (running_sum(stim.clear, stim.enable, stim.act * w) for w in (stim.w_hi, stim.w_lo))
    return hi, lo


@dataclass(frozen=True)
class DualSimulation:
    unit: str
    target: str  # "rtl" or "netlist"
    cycles: int
    single_cycles: int
    mismatches: int
    first_mismatch: int | None

    @property
    def passed(self) -> bool:
        return self.mismatches == 0


def simulate_dual(
    unit: DualModeMac,
    rtl_dir: str | Path,
    workdir: str | Path,
    *,
    netlist: bool = False,
    random_cycles: int = 5000,
    longest: int = 2**ACC_GUARD_BITS,
) -> DualSimulation:
    """Replay :func:`dual_stimulus` through the RTL (or Yosys's netlist) and compare both
    fields in packed mode, the whole dot product in single mode."""
    require_icarus()
    rtl_dir, workdir = Path(rtl_dir), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stim = dual_stimulus(unit, random_cycles, longest=longest)
    k, a = unit.weight_bits, unit.single_act_bits
    inputs = [Port("clear", 1, stim.clear), Port("en", 1, stim.enable)]
    inputs += [Port("single", 1, stim.single), Port("act", a, stim.act)]
    inputs += [Port("w_hi", k, stim.w_hi), Port("w_lo", k, stim.w_lo)]
    lo_bits = unit.parameters()["SINGLE_BITS"]
    hi_bits = unit.ports.accumulator_bits - unit.spacing
    outputs = [Port("acc_hi", hi_bits), Port("acc_lo", lo_bits)]
    sources = [rtl_dir / f"{MODULE}.v"]
    if netlist:
        sources = [synthesise(unit, sources[0], workdir / "netlist.v"), yosys_cells_library()]
    got = replay(MODULE, unit.parameters(), inputs, outputs, sources, workdir)
    hi, lo = expected_outputs(stim)
    wrong = np.flatnonzero((got[:, 1] != lo) | (~stim.single & (got[:, 0] != hi)))
    return DualSimulation(
        unit.key,
        "netlist" if netlist else "rtl",
        stim.cycles,
        int(stim.single.sum()),
        int(wrong.size),
        int(wrong[0]) if wrong.size else None,
    )


def synthesise(unit: DualModeMac, source: Path, out: Path | None = None) -> Path:
    """Yosys ``synth_xilinx -family xc7``; the netlist (``out``) or the stat report."""
    return synthesise_module(MODULE, unit.parameters(), source, out)


def measure_dual(unit: DualModeMac, source: Path, workdir: Path) -> CellCounts:
    """Cells of one dual-mode slice (DSP48E1, packed readout and mode select)."""
    return module_cells(MODULE, unit.parameters(), source, workdir)
