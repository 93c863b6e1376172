"""User-supplied costs per (layer, candidate): latency lookup tables, FPGA LUT and DSP work.

Torch-free. The ILP sums a table's costs over layers and holds the sum under a limit
(:class:`mixq.allocation.budget.Budget`). Any source can fill a table: measured latencies,
a hardware cost model, or figures from a datasheet.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixq.allocation.options import candidate_label
from mixq.errors import AllocationError
from mixq.io import atomic_write_text
from mixq.jsonfile import read_json

COST_FORMAT = "mixq.cost-table"


@dataclass(frozen=True)
class CostTable:
    """``values[layer][candidate]``: the cost of giving ``layer`` that candidate.

    Candidate keys are normalised (``"fixed-4"`` and ``"fixed-4:1.0"`` are one key).

    >>> lut = CostTable("lut", {"conv": {"sp2-4": 120.0, "fixed-8": 0}}, unit="LUT")
    >>> lut.cost("conv", "sp2-4:1")
    120.0
    >>> CostTable.from_dict(lut.to_dict()) == lut
    True
    """

    name: str  # the key of this cost's limit in a Budget: "latency", "lut", "dsp", ...
    values: Mapping[str, Mapping[str, float]]
    unit: str = ""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise AllocationError(f"a cost table needs a name, got {self.name!r}")
        normalised: dict[str, dict[str, float]] = {}
        for layer, row in self.values.items():
            normalised[layer] = {}
            for candidate, cost in row.items():
                value = _as_cost(cost, f"{self.name}[{layer}][{candidate}]")
                normalised[layer][candidate_label(candidate)] = value
        object.__setattr__(self, "values", normalised)

    def cost(self, layer: str, candidate: str) -> float:
        try:
            return self.values[layer][candidate_label(candidate)]
        except KeyError:
            raise AllocationError(
                f"cost table {self.name!r} has no entry for layer {layer!r}, candidate "
                f"{candidate_label(candidate)!r}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": COST_FORMAT,
            "name": self.name,
            "unit": self.unit,
            "layers": {layer: dict(row) for layer, row in self.values.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostTable:
        if not isinstance(data, Mapping) or data.get("format") != COST_FORMAT:
            raise AllocationError(f"not a cost table (format must be {COST_FORMAT!r})")
        try:
            return cls(str(data["name"]), data["layers"], str(data.get("unit", "")))
        except (KeyError, TypeError, AttributeError) as exc:
            raise AllocationError(f"malformed cost table: {exc!r}") from None

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CostTable:
        return cls.from_dict(read_json(path, "cost table", AllocationError))


def _as_cost(value: object, where: str) -> float:
    try:
        cost = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AllocationError(f"cost {where} is not a number: {value!r}") from None
    if not math.isfinite(cost) or cost < 0:
        raise AllocationError(f"cost {where} must be finite and >= 0, got {cost}")
    return cost
