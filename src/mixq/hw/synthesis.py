"""Measured costs of the MAC units: Yosys ``stat`` reports parsed into a typed table.

``hardware/synthesize.py`` synthesises every unit of :func:`mixq.hw.units.default_units`
with ``synth_xilinx`` for 7-series (``-family xc7``: DSP48E1, CARRY4) and for UltraScale+
(``-family xcup``: DSP48E2, CARRY8), each twice: with DSP inference (``mapping="dsp"``) and
with ``-nodsp`` (``mapping="lut"``). It writes the table that :func:`load_unit_costs` reads
(``synthesis_results.json`` beside this file, so an installed mixq has it without Yosys).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mixq.errors import HardwareCostError
from mixq.hw.units import MacUnit
from mixq.io import atomic_write_text
from mixq.jsonfile import read_json

UnitMapping = Literal["dsp", "lut"]

SYNTHESIS_RESULTS = Path(__file__).resolve().parent / "synthesis_results.json"
# Packed DSP slices (two MACs each), by key such as "packed-fixed-4/a4": the DSP48E1 and
# the readout fabric beside it (hardware/packed_mac.py writes it).
PACKED_SYNTHESIS = Path(__file__).resolve().parent / "packed_mac_synthesis.json"

# Cells that are not part of a unit's logic: I/O pads and clock buffers that synthesis adds
# at a top level (the script passes -noiopad; these only appear in other flows' reports).
_PAD_CELLS = frozenset({"IBUF", "OBUF", "OBUFT", "IOBUF", "BUFG", "BUFGCTRL"})
_LUT_CELLS = re.compile(r"^(LUT[1-6]|INV)$")  # an inverter occupies a LUT1 on the device
_FF_CELLS = re.compile(r"^FD[RSCP]E(_1)?$")
_DSP_CELLS = ("DSP48E1", "DSP48E2")
_WIDE_MUX_CELLS = ("MUXF7", "MUXF8", "MUXF9")
_CELL_LINE = re.compile(r"^\s+(\$?[A-Za-z_][\w$]*)\s+(\d+)\s*$")


@dataclass(frozen=True)
class CellCounts:
    """What one synthesised module uses, by the resources the cost model counts."""

    luts: int
    carry: int  # carry chain in 4-bit segments: a CARRY4 is one, a CARRY8 two
    ffs: int
    dsps: int  # DSP48E1 (7-series) or DSP48E2 (UltraScale+) slices
    muxf: int  # MUXF7/8/9: slice multiplexers, free beside the LUTs that feed them
    cells: Mapping[str, int] = field(default_factory=dict)  # every cell type, pads excluded

    @classmethod
    def from_cells(cls, cells: Mapping[str, int]) -> CellCounts:
        kept = {name: n for name, n in cells.items() if name not in _PAD_CELLS}
        unknown = sorted(n for n in kept if n.startswith("$"))
        if unknown:
            raise HardwareCostError(f"report holds unmapped cells {unknown}: synthesis incomplete")
        return cls(
            luts=sum(n for name, n in kept.items() if _LUT_CELLS.match(name)),
            carry=kept.get("CARRY4", 0) + 2 * kept.get("CARRY8", 0),
            ffs=sum(n for name, n in kept.items() if _FF_CELLS.match(name)),
            dsps=sum(kept.get(name, 0) for name in _DSP_CELLS),
            muxf=sum(kept.get(name, 0) for name in _WIDE_MUX_CELLS),
            cells=dict(sorted(kept.items())),
        )


def parse_yosys_stat(report: str) -> CellCounts:
    """Cell counts of the last module in a Yosys ``stat`` report.

    >>> report = '''
    ... === sp2_mac ===
    ...    Number of cells:                 59
    ...      CARRY4                          8
    ...      FDRE                           21
    ...      LUT2                           17
    ...      LUT6                            2
    ... '''
    >>> counts = parse_yosys_stat(report)
    >>> counts.luts, counts.carry, counts.ffs, counts.dsps
    (19, 8, 21, 0)
    """
    sections = re.split(r"^=== .+ ===\s*$", report, flags=re.MULTILINE)
    if len(sections) < 2:
        raise HardwareCostError("not a Yosys stat report: no '=== module ===' section found")
    body = sections[-1]
    _, marker, cell_lines = body.partition("Number of cells:")
    if not marker:
        raise HardwareCostError("Yosys stat report has no 'Number of cells:' line")
    cells: dict[str, int] = {}
    for line in cell_lines.splitlines()[1:]:
        match = _CELL_LINE.match(line)
        if match is None:
            if line.strip():
                break  # the cell list ends at the first line of another kind
            continue
        cells[match.group(1)] = cells.get(match.group(1), 0) + int(match.group(2))
    return CellCounts.from_cells(cells)


@dataclass(frozen=True)
class UnitCost:
    """The measured cost of one MAC unit under one mapping, for one device family."""

    unit: MacUnit
    family: str  # synth_xilinx -family: "xc7" or "xcup"
    mapping: UnitMapping  # "dsp": DSP inference allowed; "lut": synth_xilinx -nodsp
    counts: CellCounts

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit.key,
            "family": self.family,
            "mapping": self.mapping,
            "acc_bits": self.unit.acc_bits,
            "luts": self.counts.luts,
            "carry": self.counts.carry,
            "ffs": self.counts.ffs,
            "dsps": self.counts.dsps,
            "muxf": self.counts.muxf,
            "cells": dict(self.counts.cells),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnitCost:
        return cls(
            MacUnit.parse(data["unit"]),
            data["family"],
            data["mapping"],
            CellCounts.from_cells(data["cells"]),
        )


@dataclass(frozen=True)
class UnitCostTable:
    """Every measured unit cost, with how it was measured."""

    costs: tuple[UnitCost, ...]
    tool: str  # the synthesis tool and version
    command: str = ""  # the command that regenerates the table
    packed: Mapping[str, CellCounts] = field(default_factory=dict)  # packed DSP slices

    def __post_init__(self) -> None:
        object.__setattr__(self, "costs", tuple(self.costs))

    def get(self, unit: MacUnit, family: str, mapping: UnitMapping) -> UnitCost:
        """The cost of ``unit`` under ``mapping`` for ``family``; if its activation width
        was not synthesised, the next wider one (a conservative bound)."""
        same = [
            c
            for c in self.costs
            if (c.family, c.mapping, c.unit.candidate) == (family, mapping, unit.candidate)
        ]
        for cost in sorted(same, key=lambda c: c.unit.act_bits):
            if cost.unit.act_bits >= unit.act_bits:
                return cost
        have = sorted(
            {c.unit.key for c in self.costs if (c.family, c.mapping) == (family, mapping)}
        )
        raise HardwareCostError(
            f"no {family} {mapping}-mapped synthesis result for {unit.key} or a wider "
            f"activation; the table has {', '.join(have) or 'none'}; add the unit to "
            "hardware/synthesize.py and rerun it"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "command": self.command,
            "units": [c.to_dict() for c in self.costs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnitCostTable:
        try:
            return cls(
                tuple(UnitCost.from_dict(d) for d in data["units"]),
                data["tool"],
                data.get("command", ""),
            )
        except (KeyError, TypeError) as exc:
            raise HardwareCostError(f"malformed synthesis table: missing {exc}") from None

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> UnitCostTable:
        return cls.from_dict(read_json(path, "synthesis table", HardwareCostError))


def load_unit_costs(path: str | Path | None = None) -> UnitCostTable:
    """The committed synthesis table (or the one at ``path``), with the committed packed
    DSP slices."""
    table = UnitCostTable.load(path or SYNTHESIS_RESULTS)
    return replace(table, packed=load_packed_costs())


def load_packed_costs(path: str | Path | None = None) -> dict[str, CellCounts]:
    """Packed DSP slices: key -> cells (``hardware/packed_mac.py`` writes the table)."""
    path = Path(path or PACKED_SYNTHESIS)
    if not path.is_file():
        raise HardwareCostError(f"packed MAC synthesis table not found: {path}")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return {u["unit"]: CellCounts.from_cells(u["cells"]) for u in data["units"]}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise HardwareCostError(f"malformed packed MAC table {path}: {exc}") from None


def merge(costs: Iterable[UnitCost], tool: str, command: str) -> UnitCostTable:
    """A table of ``costs`` sorted by family, mapping and unit, for stable diffs."""
    ordered = sorted(costs, key=lambda c: (c.family, c.mapping, c.unit))
    return UnitCostTable(tuple(ordered), tool, command)
