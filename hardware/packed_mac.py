"""Check the packed DSP MAC (two fixed-point MACs per slice) bit for bit, and measure it.

For every weight/activation width the packing rule (``mixq.hw.packing``) packs on a
DSP48E1, the RTL and Yosys's xc7 netlist (DSP48E1 included) are simulated with Icarus
Verilog against Python integers; two spacings the rule refuses are simulated too and must
fail: the old "11 bits apart" at 4-bit activations, and 4-bit weights at 8-bit
activations with the 21-bit spacing that fits the pre-adder. The Yosys cell counts of
each packed slice (the readout fabric beside the DSP48E1) go to
``src/mixq/hw/packed_mac_synthesis.json``; the simulation record to
``hardware/packed_mac_results.json``. The dual-mode slice (``rtl/dual_mode_mac.v``: packed
at 4-bit activations, one MAC at 8-bit ones, per dot product) is simulated the same way,
and its mode select measured (``dual_mode`` in both files).

    python hardware/packed_mac.py   # needs iverilog and yosys
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mixq.hw.dual_mode_mac import DualModeMac, measure_dual, simulate_dual
from mixq.hw.packed_mac import PackedMac, measure_readout, simulate_packed
from mixq.hw.packing import DSP48E1, dsp_packing
from mixq.hw.synthesis import PACKED_SYNTHESIS
from mixq.io import atomic_write_text

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "rtl" / "packed_mac.v"
DUAL_SOURCE = HERE / "rtl" / "dual_mode_mac.v"
DUAL_UNITS = (DualModeMac(4, 4, 8), DualModeMac(3, 4, 8), DualModeMac(2, 4, 8))


def packable() -> list[PackedMac]:
    return [
        PackedMac(w, a) for a in (4, 8) for w in range(2, 9) if dsp_packing(DSP48E1, w, a).macs == 2
    ]


def refused() -> list[PackedMac]:
    return [PackedMac(4, 4, spacing=11), PackedMac(4, 8, spacing=21)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random-cycles", type=int, default=20_000)
    args = parser.parse_args()
    command = shlex.join(["python", "hardware/packed_mac.py", *sys.argv[1:]])
    yosys = subprocess.run(["yosys", "-V"], capture_output=True, text=True).stdout.strip()
    iverilog = subprocess.run(["iverilog", "-V"], capture_output=True, text=True).stdout
    print(f"# {command}\n# {yosys}\n# {iverilog.splitlines()[0]}")
    results, costs = [], []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for i, unit in enumerate(packable() + refused()):
            for netlist in (False, True):
                r = simulate_packed(
                    unit,
                    SOURCE.parent,
                    work / f"{i}{netlist}",
                    netlist=netlist,
                    random_cycles=args.random_cycles,
                )
                results.append({**asdict(r), "passed": r.passed, "rule_packs": unit in packable()})
                verdict = "ok" if r.passed else f"{r.mismatches} mismatches from {r.first_mismatch}"
                print(
                    f"{r.unit:18s} spacing {r.spacing:2d} {r.target:7s} {r.cycles:6d} cycles: "
                    f"{verdict}"
                )
        for unit in packable():
            counts = measure_readout(unit, SOURCE, work / f"synth_{unit.key.replace('/', '_')}")
            print(
                f"{unit.key:18s} LUT={counts.luts} carry={counts.carry} FF={counts.ffs} "
                f"DSP={counts.dsps}"
            )
            costs.append(
                {
                    "unit": unit.key,
                    "spacing": unit.spacing,
                    "luts": counts.luts,
                    "carry": counts.carry,
                    "ffs": counts.ffs,
                    "dsps": counts.dsps,
                    "cells": dict(counts.cells),
                }
            )
        dual_results, dual_costs = dual_mode(work, args.random_cycles)
    sound = all(r["passed"] == r["rule_packs"] for r in results)
    sound = sound and all(r["passed"] for r in dual_results)
    atomic_write_text(
        HERE / "packed_mac_results.json",
        json.dumps(
            {
                "command": command,
                "simulator": iverilog.splitlines()[0],
                "synthesis": yosys,
                "results": results,
                "dual_mode": dual_results,
            },
            indent=1,
        )
        + "\n",
    )
    atomic_write_text(
        PACKED_SYNTHESIS,
        json.dumps(
            {
                "tool": yosys,
                "command": command,
                "family": "xc7",
                "units": costs,
                "dual_mode": dual_costs,
            },
            indent=1,
        )
        + "\n",
    )
    print(f"wrote {HERE / 'packed_mac_results.json'} and {PACKED_SYNTHESIS}")
    return 0 if sound else 1


def dual_mode(work: Path, random_cycles: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Simulate (RTL and netlist) and measure each dual-mode slice."""
    results, costs = [], []
    for i, unit in enumerate(DUAL_UNITS):
        for netlist in (False, True):
            r = simulate_dual(
                unit,
                DUAL_SOURCE.parent,
                work / f"dual{i}{netlist}",
                netlist=netlist,
                random_cycles=random_cycles,
            )
            results.append({**asdict(r), "passed": r.passed})
            verdict = "ok" if r.passed else f"{r.mismatches} mismatches from {r.first_mismatch}"
            print(
                f"{r.unit:22s} {r.target:7s} {r.cycles:6d} cycles "
                f"({r.single_cycles} single): {verdict}"
            )
        counts = measure_dual(unit, DUAL_SOURCE, work / f"synth_dual{i}")
        print(
            f"{unit.key:22s} LUT={counts.luts} carry={counts.carry} FF={counts.ffs} "
            f"DSP={counts.dsps}"
        )
        costs.append(
            {
                "unit": unit.key,
                "spacing": unit.spacing,
                "single_bits": unit.single_bits,
                "mode_select_bits": unit.mode_select_bits,
                "luts": counts.luts,
                "carry": counts.carry,
                "ffs": counts.ffs,
                "dsps": counts.dsps,
                "cells": dict(counts.cells),
            }
        )
    return results, costs


if __name__ == "__main__":
    sys.exit(main())
