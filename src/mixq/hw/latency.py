"""Latency lookup tables for the HAWQ-V3 ILP: layer x candidate -> cycles or seconds.

A :class:`LatencyTable` is the whole interface the ILP needs: ``table.get(layer,
candidate)`` is the latency of ``layer`` if all its rows used ``candidate``. Two sources
fill it: :func:`fpga_latency_table` from the FPGA model (cycles), and
:func:`mixq.hw.cpu_latency.measure_cpu_latency` from timing on this machine (seconds).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mixq.errors import HardwareCostError
from mixq.hw.fpga import FpgaCostModel
from mixq.hw.report import FpgaDesign
from mixq.hw.workload import LayerWork
from mixq.io import atomic_write_text
from mixq.jsonfile import read_json
from mixq.plan import LayerShape
from mixq.schemes import Candidate

LatencyUnit = Literal["cycles", "s"]
TABLE_VERSION = 1


@dataclass(frozen=True)
class LatencyTable:
    """Latency per (layer, candidate), in one unit, with where it comes from.

    >>> t = LatencyTable("cycles", {"conv": {"fixed-4": 100.0, "fixed-8": 200.0}}, "fpga:xc7z020")
    >>> t.get("conv", "fixed-8"), t.candidates
    (200.0, ('fixed-4', 'fixed-8'))
    >>> LatencyTable.from_dict(t.to_dict()) == t
    True
    """

    unit: LatencyUnit
    values: Mapping[str, Mapping[str, float]]  # layer -> candidate -> latency
    source: str  # "fpga:<device>" or "cpu:<processor>"
    metadata: Mapping[str, Any] = field(default_factory=dict)  # clock, threads, repeats, ...
    version: int = TABLE_VERSION

    def __post_init__(self) -> None:
        if self.unit not in ("cycles", "s"):
            raise HardwareCostError(f"latency unit must be 'cycles' or 's', got {self.unit!r}")
        values = {
            layer: {str(Candidate.parse(c)): float(v) for c, v in row.items()}
            for layer, row in self.values.items()
        }
        for layer, row in values.items():
            bad = {c: v for c, v in row.items() if not v >= 0}
            if bad:
                raise HardwareCostError(f"layer {layer}: latencies must be >= 0, got {bad}")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.values)

    @property
    def candidates(self) -> tuple[str, ...]:
        return tuple(sorted({c for row in self.values.values() for c in row}))

    def get(self, layer: str, candidate: Candidate | str) -> float:
        key = str(Candidate.parse(candidate))
        try:
            return self.values[layer][key]
        except KeyError:
            raise HardwareCostError(
                f"no latency for layer {layer!r} with {key}; the table ({self.source}) has "
                f"{len(self.values)} layers and candidates {', '.join(self.candidates)}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "unit": self.unit,
            "source": self.source,
            "metadata": dict(self.metadata),
            "values": {layer: dict(row) for layer, row in self.values.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        try:
            if data.get("version", TABLE_VERSION) != TABLE_VERSION:
                raise HardwareCostError(f"latency table version {data['version']} not supported")
            return cls(data["unit"], data["values"], data["source"], data.get("metadata", {}))
        except (KeyError, TypeError, AttributeError) as exc:
            raise HardwareCostError(f"malformed latency table: {exc}") from None

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        return cls.from_dict(read_json(path, "latency table", HardwareCostError))


def fpga_latency_table(
    model: FpgaCostModel,
    shapes: Mapping[str, LayerShape],
    candidates: Iterable[Candidate | str],
    *,
    act_bits: int = 8,
) -> LatencyTable:
    """Cycles of each layer with all its rows at each candidate, on one design.

    The design is sized once for the candidate set, as if every candidate did an equal
    share of the model's MACs (the ILP's choice is not known beforehand): all DSP slices
    for the fixed-point candidates, the LUT array split evenly between the others. Each
    entry is ``max(compute, transfer)`` as in :class:`~mixq.hw.fpga.FpgaCostModel`, the
    weights streamed when the whole model at that candidate would not fit on chip.
    """
    parsed = [Candidate.parse(c) for c in candidates]
    if not parsed:
        raise HardwareCostError("a latency table needs at least one candidate")
    design = model.design_for({c: 1.0 for c in parsed}, {c: act_bits for c in parsed})
    # Off-chip traffic as if the whole model were at each candidate (its weights streamed
    # when they do not fit in block RAM beside the largest layer's activations).
    largest = max((s.input_elements + s.output_elements for s in shapes.values()), default=0)
    weights = sum(s.weights for s in shapes.values())
    on_chip = {c: weights * c.bits + largest * act_bits <= model.device.bram_bits for c in parsed}
    values = {
        name: {
            str(c): _cycles(model, shape, c, act_bits, replace(design, weights_on_chip=on_chip[c]))
            for c in parsed
        }
        for name, shape in shapes.items()
    }
    return LatencyTable(
        "cycles",
        values,
        f"fpga:{model.device.name}",
        {
            "clock_hz": model.device.clock_mhz * 1e6,
            "act_bits": act_bits,
            "design": design.to_dict(),
        },
    )


def _cycles(
    model: FpgaCostModel, shape: LayerShape, candidate: Candidate, act_bits: int, design: FpgaDesign
) -> float:
    work = LayerWork(shape, act_bits, {candidate: shape.rows})
    return float(model.layer_cost(work, design).cycles or 0)
