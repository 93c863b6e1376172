"""Check every MAC unit bit for bit against mixq's grids with Icarus Verilog.

For each unit of ``mixq.hw.units.default_units()``: every weight code times every
activation, the longest accumulation the guard bits allow (largest product, positive then
negative) and random cycles, replayed through the RTL (and, with ``--netlist``, through
the netlist Yosys synthesises for 7-series, DSP48E1 included) and compared after every
clock edge with the integers of ``mixq.grids.integer_magnitudes``. Writes
``hardware/simulation_results.json``.

    python hardware/simulate.py [--netlist]   # needs iverilog (and yosys for --netlist)
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from mixq.hw.rtl_sim import SimulationResult, simulate
from mixq.hw.units import MacUnit, default_units
from mixq.io import atomic_write_text

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netlist", action="store_true", help="also simulate Yosys netlists")
    parser.add_argument("--random-cycles", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--output", type=Path, default=HERE / "simulation_results.json")
    args = parser.parse_args()
    command = shlex.join(["python", "hardware/simulate.py", *sys.argv[1:]])
    tool = subprocess.run(["iverilog", "-V"], capture_output=True, text=True).stdout
    print(f"# {command}\n# {tool.splitlines()[0] if tool else 'iverilog not found'}")
    targets = [False, True] if args.netlist else [False]
    jobs = [(unit, netlist) for unit in default_units() for netlist in targets]

    def run(job: tuple[MacUnit, bool]) -> SimulationResult:
        unit, netlist = job
        with tempfile.TemporaryDirectory() as work:
            return simulate(
                unit, HERE / "rtl", work, netlist=netlist, random_cycles=args.random_cycles
            )

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, jobs))
    for r in results:
        verdict = "ok" if r.passed else f"{r.mismatches} MISMATCHES from cycle {r.first_mismatch}"
        print(
            f"{r.unit:12s} {r.target:7s} {r.weight_codes:3d} codes x {r.activations:3d} "
            f"activations, {r.cycles:6d} cycles: {verdict}"
        )
    record = {
        "command": command,
        "simulator": tool.splitlines()[0] if tool else None,
        "results": [asdict(r) for r in results],
    }
    atomic_write_text(args.output, json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
