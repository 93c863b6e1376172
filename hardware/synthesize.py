"""Synthesise every MAC unit with Yosys for Xilinx FPGAs and record what each uses.

Each unit of ``mixq.hw.units.default_units()`` is synthesised for 7-series
(``synth_xilinx -family xc7``) and UltraScale+ (``-family xcup``), each twice: as is
(Yosys may map multipliers and their accumulators to DSP48 slices) and with ``-nodsp``
(everything in LUTs and carry chains). The counts of LUTs, carry cells (CARRY4/CARRY8),
flip-flops and DSP48E1/E2 slices go to ``src/mixq/hw/synthesis_results.json``, which the
FPGA cost model reads.

    python hardware/synthesize.py            # needs yosys (apt-get install yosys)
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mixq.hw.synthesis import SYNTHESIS_RESULTS, UnitCost, merge, parse_yosys_stat
from mixq.hw.units import MacUnit, default_units

RTL = Path(__file__).resolve().parent / "rtl"
FAMILIES = ("xc7", "xcup")


def yosys_script(unit: MacUnit, family: str, mapping: str, report: Path) -> str:
    params = " ".join(f"-set {name} {value}" for name, value in unit.parameters().items())
    nodsp = " -nodsp" if mapping == "lut" else ""
    return (
        f"read_verilog {RTL / (unit.module + '.v')}; chparam {params} {unit.module}; "
        f"synth_xilinx -family {family} -top {unit.module} -noiopad{nodsp}; "
        f"tee -q -o {report} stat"
    )


def synthesise(unit: MacUnit, family: str, mapping: str, reports: Path) -> UnitCost:
    report = reports / f"{family}_{unit.key.replace('/', '_')}_{mapping}.txt"
    script = yosys_script(unit, family, mapping, report)
    done = subprocess.run(["yosys", "-q", "-p", script], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"yosys failed on {unit.key} ({family}, {mapping}):\n{done.stderr}")
    counts = parse_yosys_stat(report.read_text())
    return UnitCost(unit, family, mapping, counts)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=SYNTHESIS_RESULTS)
    parser.add_argument("--reports", type=Path, default=None, help="keep Yosys reports here")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    args = parser.parse_args()
    if shutil.which("yosys") is None:
        print("yosys not found: apt-get install -y yosys", file=sys.stderr)
        return 1
    version = subprocess.run(["yosys", "-V"], capture_output=True, text=True).stdout.strip()
    command = shlex.join(["python", "hardware/synthesize.py", *sys.argv[1:]])
    print(f"# {command}\n# {version}")
    with tempfile.TemporaryDirectory() as scratch:
        reports = args.reports or Path(scratch)
        reports.mkdir(parents=True, exist_ok=True)
        jobs = [(u, f, m) for f in args.families for u in default_units() for m in ("dsp", "lut")]
        with ThreadPoolExecutor(args.jobs) as pool:
            costs = list(pool.map(lambda job: synthesise(*job, reports), jobs))
    for cost in costs:
        c = cost.counts
        print(
            f"{cost.family:4s} {cost.unit.key:12s} {cost.mapping:3s} acc={cost.unit.acc_bits:2d}  "
            f"LUT={c.luts:4d} carry={c.carry:3d} FF={c.ffs:3d} DSP={c.dsps}"
        )
    merge(costs, version, command).save(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
