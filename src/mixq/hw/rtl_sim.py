"""Bit-exact check of the Verilog MAC units against mixq's grids, with Icarus Verilog.

For a :class:`~mixq.hw.units.MacUnit`, :func:`stimulus` builds a sequence of cycles: every
weight code times every activation (exhaustive), a worst-case run of the longest dot
product (the largest product, positive then negative, as many times as the accumulator's
guard bits promise), and random cycles with random clears. :func:`expected_accumulator`
is the Python reference, the integers of :func:`mixq.grids.integer_magnitudes`; a small
testbench replays the cycles through the RTL (or through Yosys's synthesised netlist) and
:func:`simulate` compares the accumulator after every clock edge.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixq.errors import HardwareCostError
from mixq.hw.units import ACC_GUARD_BITS, MacUnit


@dataclass(frozen=True, eq=False)
class Stimulus:
    """One row per clock cycle; ``code`` is the weight code, ``value`` its signed integer."""

    clear: np.ndarray  # (cycles,) bool
    enable: np.ndarray  # (cycles,) bool
    act: np.ndarray  # (cycles,) int
    code: np.ndarray  # (cycles,) int
    value: np.ndarray  # (cycles,) int

    @property
    def cycles(self) -> int:
        return int(self.act.size)


@dataclass(frozen=True)
class SimulationResult:
    unit: str
    target: str  # "rtl" or "netlist"
    cycles: int
    weight_codes: int
    activations: int
    mismatches: int
    first_mismatch: int | None  # cycle index

    @property
    def passed(self) -> bool:
        return self.mismatches == 0


def stimulus(unit: MacUnit, random_cycles: int = 20_000, seed: int = 0) -> Stimulus:
    """Every (code, activation) pair, the worst-case accumulation, then random cycles."""
    codes = np.array(unit.weight_codes(), dtype=np.int64)  # (n_codes, 2): code, value
    acts = np.arange(2**unit.act_bits, dtype=np.int64)
    # The guard bits promise 2^guard products of the largest magnitude without overflow;
    # the sweep clears that often, and the worst case runs exactly that long each way.
    longest = 2**ACC_GUARD_BITS
    sweep = _Cycles(
        clear=np.arange(len(codes) * acts.size) % longest == 0,
        act=np.tile(acts, len(codes)),
        pick=np.repeat(np.arange(len(codes)), acts.size),
    )
    top, bottom = int(np.argmax(codes[:, 1])), int(np.argmin(codes[:, 1]))
    worst = [_Cycles.run(longest, acts[-1], pick) for pick in (top, bottom)]
    rng = np.random.default_rng(seed)
    noise = _Cycles(
        clear=(rng.random(random_cycles) < 1e-3) | (np.arange(random_cycles) == 0),
        act=rng.integers(0, acts.size, random_cycles),
        pick=rng.integers(0, len(codes), random_cycles),
        enable=rng.random(random_cycles) < 0.9,
    )
    parts = [sweep, *worst, noise]
    pick = np.concatenate([p.pick for p in parts])
    return Stimulus(
        clear=np.concatenate([p.clear for p in parts]),
        enable=np.concatenate([p.enabled() for p in parts]),
        act=np.concatenate([p.act for p in parts]),
        code=codes[pick, 0],
        value=codes[pick, 1],
    )


@dataclass(frozen=True, eq=False)
class _Cycles:
    clear: np.ndarray
    act: np.ndarray
    pick: np.ndarray  # row of the unit's code table
    enable: np.ndarray | None = None

    @classmethod
    def run(cls, products: int, act: int, pick: int) -> _Cycles:
        """A clear, then ``products`` accumulations of one product."""
        clear = np.zeros(products + 1, dtype=bool)
        clear[0] = True
        return cls(clear, np.full(products + 1, act), np.full(products + 1, pick))

    def enabled(self) -> np.ndarray:
        return np.ones(self.act.size, dtype=bool) if self.enable is None else self.enable


def running_sum(clear: np.ndarray, enable: np.ndarray, products: np.ndarray) -> np.ndarray:
    """An accumulator after each clock edge: cleared to 0 on ``clear``, else plus the
    cycle's product where ``enable`` is set.

    >>> running_sum(np.array([1, 0, 0, 1, 0], bool), np.ones(5, bool), np.arange(5) + 1)
    array([0, 2, 5, 0, 5])
    """
    total = np.cumsum(np.where(enable & ~clear, products, 0))
    last_clear = np.maximum.accumulate(np.where(clear, np.arange(clear.size), -1))
    return total - np.where(last_clear >= 0, total[np.maximum(last_clear, 0)], 0)


def expected_accumulator(stim: Stimulus, acc_bits: int) -> np.ndarray:
    """The accumulator after each clock edge: cleared to 0, else plus ``act * value``."""
    out = running_sum(stim.clear, stim.enable, stim.act * stim.value)
    limit = 2 ** (acc_bits - 1)
    if out.size and (out.max() >= limit or out.min() < -limit):
        raise HardwareCostError(f"stimulus overflows a {acc_bits}-bit accumulator")
    return out


@dataclass(frozen=True, eq=False)
class Port:
    """A port of the unit under test: its name and width; an input carries its value
    per cycle, an output (``values`` None) is printed signed after each clock edge."""

    name: str
    bits: int
    values: np.ndarray | None = None


def pack_words(inputs: Sequence[Port]) -> np.ndarray:
    """Each cycle's input values as one word, the first port in the highest bits; a
    negative value is written in two's complement within its port.

    >>> pack_words([Port("clear", 1, np.array([1, 0])), Port("w", 3, np.array([-1, 2]))])
    array([15,  2])
    """
    words = np.zeros(len(inputs[0].values), dtype=np.int64)  # type: ignore[arg-type]
    for port in inputs:
        values = np.asarray(port.values, dtype=np.int64)
        words = (words << port.bits) | (values & ((1 << port.bits) - 1))
    return words


def testbench(
    module: str,
    parameters: dict[str, int],
    inputs: Sequence[Port],
    outputs: Sequence[Port],
    vectors: Path,
    cycles: int,
) -> str:
    """A Verilog testbench that clocks ``module`` once per word of ``vectors`` (its
    inputs, concatenated) and prints its outputs after each edge."""
    params = ", ".join(f".{name}({value})" for name, value in parameters.items())
    width = sum(port.bits for port in inputs)
    regs = "".join(f"    reg [{p.bits - 1}:0] {p.name};\n" for p in inputs)
    wires = "".join(f"    wire signed [{p.bits - 1}:0] {p.name};\n" for p in outputs)
    wiring = ", ".join(f".{p.name}({p.name})" for p in (*inputs, *outputs))
    fields = ", ".join(p.name for p in inputs)
    formats = " ".join("%0d" for _ in outputs)
    shown = ", ".join(p.name for p in outputs)
    return f"""`timescale 1ns/1ps
module tb;
    reg clk = 0;
{regs}    reg [{width - 1}:0] vectors [0:{cycles - 1}];
{wires}    integer i;
    {module} #({params}) dut (.clk(clk), {wiring});
    initial begin
        $readmemh("{vectors}", vectors);
        for (i = 0; i < {cycles}; i = i + 1) begin
            {{{fields}}} = vectors[i];
            #1 clk = 1;
            #1 clk = 0;
            $display("{formats}", {shown});
        end
        $finish;
    end
endmodule
"""


def replay(
    module: str,
    parameters: dict[str, int],
    inputs: Sequence[Port],
    outputs: Sequence[Port],
    sources: Sequence[Path],
    workdir: Path,
) -> np.ndarray:
    """Simulate ``module`` (from ``sources``) in ``workdir`` on the inputs' values, one
    clock edge per cycle; the outputs after each edge, shape (cycles, len(outputs))."""
    words = pack_words(inputs)
    digits = (sum(port.bits for port in inputs) + 3) // 4
    vectors = workdir / "vectors.hex"
    vectors.write_text("\n".join(f"{w:0{digits}x}" for w in words.tolist()) + "\n")
    bench = workdir / "tb.v"
    bench.write_text(testbench(module, parameters, inputs, outputs, vectors, words.size))
    printed = np.array(run_testbench(bench, sources, workdir), dtype=np.int64)
    if printed.size != words.size * len(outputs):
        raise HardwareCostError(
            f"simulation printed {printed.size} values for {words.size} cycles of "
            f"{len(outputs)} outputs"
        )
    return printed.reshape(words.size, len(outputs))


def yosys_cells_library() -> Path:
    """Yosys's simulation models of the Xilinx primitives (for netlist simulation)."""
    yosys = shutil.which("yosys")
    if yosys is None:
        raise HardwareCostError("yosys not found (apt-get install -y yosys)")
    path = Path(yosys).resolve().parent.parent / "share" / "yosys" / "xilinx" / "cells_sim.v"
    if not path.is_file():
        raise HardwareCostError(f"Yosys's Xilinx simulation library not found at {path}")
    return path


def synthesise_netlist(unit: MacUnit, rtl_dir: Path, out: Path) -> Path:
    """The unit synthesised for xc7 (DSPs allowed) as a Verilog netlist of primitives."""
    params = " ".join(f"-set {n} {v}" for n, v in unit.parameters().items())
    script = (
        f"read_verilog {rtl_dir / (unit.module + '.v')}; chparam {params} {unit.module}; "
        f"synth_xilinx -family xc7 -top {unit.module} -noiopad; "
        f"write_verilog -noattr {out}"
    )
    run_tool(["yosys", "-q", "-p", script])
    return out


def simulate(
    unit: MacUnit,
    rtl_dir: str | Path,
    workdir: str | Path,
    *,
    netlist: bool = False,
    random_cycles: int = 20_000,
) -> SimulationResult:
    """Replay :func:`stimulus` through the unit and compare with the Python reference."""
    require_icarus()
    rtl_dir, workdir = Path(rtl_dir), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stim = stimulus(unit, random_cycles)
    expected = expected_accumulator(stim, unit.acc_bits)
    if netlist:
        sources = [synthesise_netlist(unit, rtl_dir, workdir / "netlist.v"), yosys_cells_library()]
    else:
        sources = [rtl_dir / f"{unit.module}.v"]
    a, k = unit.act_bits, unit.weight_bits
    inputs = [Port("clear", 1, stim.clear), Port("en", 1, stim.enable)]
    inputs += [Port("act", a, stim.act), Port("weight", k, stim.code)]
    outputs = [Port("acc", unit.acc_bits)]
    got = replay(unit.module, unit.parameters(), inputs, outputs, sources, workdir)[:, 0]
    wrong = np.flatnonzero(got != expected)
    return SimulationResult(
        unit=unit.key,
        target="netlist" if netlist else "rtl",
        cycles=stim.cycles,
        weight_codes=len(unit.weight_codes()),
        activations=2**unit.act_bits,
        mismatches=int(wrong.size),
        first_mismatch=int(wrong[0]) if wrong.size else None,
    )


def require_icarus() -> None:
    """Icarus Verilog is installed, or :class:`HardwareCostError` saying how to get it."""
    if shutil.which("iverilog") is None or shutil.which("vvp") is None:
        raise HardwareCostError("Icarus Verilog not found (apt-get install -y iverilog)")


def run_testbench(bench: Path, sources: Sequence[Path], workdir: Path) -> list[int]:
    """Compile ``bench`` with ``sources`` in ``workdir``, run it; the integers it printed."""
    binary = workdir / "sim.vvp"
    run_tool(["iverilog", "-g2012", "-o", str(binary), str(bench), *map(str, sources)])
    printed = run_tool(["vvp", "-n", str(binary)]).split()
    return [int(x) for x in printed if x.lstrip("-").isdigit()]


def run_tool(command: list[str]) -> str:
    """Run an EDA tool (Yosys, Icarus); its standard output, or the tool's own error text
    in a ``HardwareCostError``."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise HardwareCostError(f"{command[0]} failed:\n{done.stderr or done.stdout}")
    return done.stdout
