"""Two fixed-point MACs in one DSP slice (``hardware/rtl/packed_mac.v``): bit-exact check
against Python integers with Icarus Verilog, and the fabric its readout measures in Yosys.

The packing rule (:mod:`mixq.hw.packing`) says when two fields fit; this module runs the
RTL that implements them: every weight pair times every activation, the longest
accumulation the guard bits promise with the largest products in all four sign
combinations, and random cycles with random clears, compared after every clock edge with
``sum(w_hi * act)`` and ``sum(w_lo * act)``. At too small a spacing the same stimulus
shows the overflow (the old "11 bits apart" rule fails after 9 products).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixq.errors import HardwareCostError
from mixq.hw.packing import DSP48E1, DspPorts, dsp_packing
from mixq.hw.rtl_sim import (
    Port,
    replay,
    require_icarus,
    run_tool,
    running_sum,
    yosys_cells_library,
)
from mixq.hw.synthesis import CellCounts, parse_yosys_stat
from mixq.hw.units import ACC_GUARD_BITS

MODULE = "packed_mac"


@dataclass(frozen=True)
class PackedMac:
    """Two ``weight_bits`` fixed-point weights times one ``act_bits`` activation in one
    slice, fields ``spacing`` bits apart (by default the rule's spacing).

    >>> unit = PackedMac(4, 4)
    >>> unit.key, unit.spacing, unit.parameters()["PRE_BITS"]
    ('packed-fixed-4/a4', 21, 25)
    """

    weight_bits: int
    act_bits: int
    spacing: int = 0  # 0: the packing rule's
    ports: DspPorts = DSP48E1

    def __post_init__(self) -> None:
        if not self.spacing:
            rule = dsp_packing(self.ports, self.weight_bits, self.act_bits)
            object.__setattr__(self, "spacing", rule.spacing)
        if not 2 <= self.spacing < self.ports.accumulator_bits:
            raise HardwareCostError(f"field spacing {self.spacing} is outside the accumulator")

    @property
    def key(self) -> str:
        return f"packed-fixed-{self.weight_bits}/a{self.act_bits}"

    @property
    def high_bits(self) -> int:
        return self.ports.accumulator_bits - self.spacing

    def parameters(self) -> dict[str, int]:
        return {
            "A_BITS": self.act_bits,
            "W_BITS": self.weight_bits,
            "SHIFT": self.spacing,
            "PRE_BITS": self.ports.preadd_bits,
            "P_BITS": self.ports.accumulator_bits,
        }

    def weights(self) -> np.ndarray:
        top = 2 ** (self.weight_bits - 1) - 1  # the symmetric fixed-point grid
        return np.arange(-top, top + 1, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class PackedStimulus:
    clear: np.ndarray  # (cycles,) bool
    enable: np.ndarray  # (cycles,) bool
    act: np.ndarray  # (cycles,) int
    w_hi: np.ndarray  # (cycles,) signed int
    w_lo: np.ndarray  # (cycles,) signed int

    @property
    def cycles(self) -> int:
        return int(self.act.size)


def packed_stimulus(
    unit: PackedMac, random_cycles: int = 5000, seed: int = 0, longest: int = 2**ACC_GUARD_BITS
) -> PackedStimulus:
    """Every (w_hi, w_lo, act), ``longest`` largest products per sign pair, random cycles."""
    w, acts = unit.weights(), np.arange(2**unit.act_bits, dtype=np.int64)
    hi, lo, act = (g.ravel() for g in np.meshgrid(w, w, acts, indexing="ij"))
    sweep_clear = np.arange(hi.size) % 64 == 0
    parts = [(sweep_clear, np.ones(hi.size, bool), act, hi, lo)]
    top = int(w[-1])
    for s_hi, s_lo in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        clear = np.zeros(longest + 1, dtype=bool)
        clear[0] = True
        full = np.full(longest + 1, 1)
        parts.append((clear, full > 0, full * acts[-1], full * s_hi * top, full * s_lo * top))
    rng = np.random.default_rng(seed)
    parts.append(
        (
            (rng.random(random_cycles) < 1e-3) | (np.arange(random_cycles) == 0),
            rng.random(random_cycles) < 0.9,
            rng.integers(0, acts.size, random_cycles),
            rng.choice(w, random_cycles),
            rng.choice(w, random_cycles),
        )
    )
    columns = [np.concatenate(c) for c in zip(*parts, strict=True)]
    return PackedStimulus(*columns)


def expected_fields(stim: PackedStimulus) -> tuple[np.ndarray, np.ndarray]:
    """The two dot products after each clock edge (cleared to 0, else plus the products)."""
    hi, lo = (running_sum(stim.clear, stim.enable, stim.act * w) for w in (stim.w_hi, stim.w_lo))
    return hi, lo


@dataclass(frozen=True)
class PackedSimulation:
    unit: str
    spacing: int
    target: str  # "rtl" or "netlist"
    cycles: int
    mismatches: int
    first_mismatch: int | None

    @property
    def passed(self) -> bool:
        return self.mismatches == 0


def simulate_packed(
    unit: PackedMac,
    rtl_dir: str | Path,
    workdir: str | Path,
    *,
    netlist: bool = False,
    random_cycles: int = 5000,
    longest: int = 2**ACC_GUARD_BITS,
) -> PackedSimulation:
    """Replay :func:`packed_stimulus` through the RTL (or Yosys's netlist) and compare;
    ``longest`` is the worst-case run's length (the guard bits' promise by default)."""
    require_icarus()
    rtl_dir, workdir = Path(rtl_dir), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stim = packed_stimulus(unit, random_cycles, longest=longest)
    k, a = unit.weight_bits, unit.act_bits
    inputs = [Port("clear", 1, stim.clear), Port("en", 1, stim.enable), Port("act", a, stim.act)]
    inputs += [Port("w_hi", k, stim.w_hi), Port("w_lo", k, stim.w_lo)]
    outputs = [Port("acc_hi", unit.high_bits), Port("acc_lo", unit.spacing)]
    source = rtl_dir / f"{MODULE}.v"
    sources = [source]
    if netlist:
        sources = [synthesise(unit, source, workdir / "netlist.v"), yosys_cells_library()]
    got = replay(MODULE, unit.parameters(), inputs, outputs, sources, workdir)
    want = np.stack(expected_fields(stim), axis=1)
    wrong = np.flatnonzero((got != want).any(axis=1))
    return PackedSimulation(
        unit.key,
        unit.spacing,
        "netlist" if netlist else "rtl",
        stim.cycles,
        int(wrong.size),
        int(wrong[0]) if wrong.size else None,
    )


def synthesise(unit: PackedMac, source: Path, out: Path | None = None) -> Path:
    """Yosys ``synth_xilinx -family xc7``; the netlist (``out``) or the stat report."""
    return synthesise_module(MODULE, unit.parameters(), source, out)


def measure_readout(unit: PackedMac, source: Path, workdir: Path) -> CellCounts:
    """Cells of one packed slice (DSP48E1 plus the readout fabric beside it)."""
    return module_cells(MODULE, unit.parameters(), source, workdir)


def synthesise_module(
    module: str, parameters: dict[str, int], source: Path, out: Path | None = None
) -> Path:
    """Yosys ``synth_xilinx -family xc7`` of ``module`` in ``source`` with ``parameters``;
    the netlist (``out``) or the stat report beside ``source``."""
    params = " ".join(f"-set {n} {v}" for n, v in parameters.items())
    target = out or source.parent / "stat.txt"
    write = f"write_verilog -noattr {target}" if out else f"tee -q -o {target} stat"
    run_tool(
        [
            "yosys",
            "-q",
            "-p",
            f"read_verilog {source}; chparam {params} {module}; "
            f"synth_xilinx -family xc7 -top {module} -noiopad; {write}",
        ]
    )
    return target


def module_cells(
    module: str, parameters: dict[str, int], source: Path, workdir: Path
) -> CellCounts:
    """The cells Yosys maps ``module`` to, synthesised from a copy of ``source`` in
    ``workdir`` (the stat report is written beside the copy, not the sources)."""
    workdir.mkdir(parents=True, exist_ok=True)
    copy = workdir / source.name
    copy.write_text(source.read_text())
    return parse_yosys_stat(synthesise_module(module, parameters, copy).read_text())
