"""Each layer's candidates and the perturbation each would cause: the input of the ILPs.

Torch-free. A candidate is a :class:`mixq.Ratio` (one scheme-and-bits such as ``fixed-4``,
or a mix such as ``sp2-4:0.6,fixed-4:0.35,fixed-8:0.05``), optionally with the exact row
assignment it was costed with, so the plan applies precisely what the ILP weighed.
``omega`` is HAWQ's ``trace / n * ||Q(W) - W||^2`` (or its per-row sum); the torch side
(:func:`mixq.sensitivity.perturbation_table`) computes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixq.assignment import RowAssignment
from mixq.errors import AllocationError, MixqError
from mixq.io import atomic_write_text
from mixq.jsonfile import read_json
from mixq.plan import LayerShape
from mixq.ratio import Ratio

TABLE_FORMAT = "mixq.perturbation-table"
TABLE_VERSION = 1


def candidate_label(ratio: Ratio | str) -> str:
    """The canonical text of a candidate, the key of cost tables: ``"fixed-4"`` ->
    ``"fixed-4:1"``.

    >>> candidate_label("sp2-4:0.5, fixed-4:0.5")
    'sp2-4:0.5,fixed-4:0.5'
    """
    try:
        return str(Ratio.parse(ratio))
    except MixqError as exc:
        raise AllocationError(f"bad candidate {ratio!r}: {exc}") from None


@dataclass(frozen=True)
class CandidateOption:
    """One choice for one layer and the perturbation it causes."""

    ratio: Ratio
    omega: float  # trace/n * ||Q(W) - W||^2, or the per-row sum of the same
    assignment: RowAssignment | None = None  # the exact rows the omega was computed with

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", Ratio.parse(self.ratio))
        if not np.isfinite(self.omega):
            raise AllocationError(f"candidate {self.label}: omega must be finite, got {self.omega}")
        if self.assignment is not None and not set(self.assignment.candidates) <= set(
            self.ratio.candidates
        ):
            raise AllocationError(f"candidate {self.label}: its assignment uses other candidates")

    @property
    def label(self) -> str:
        return str(self.ratio)

    def bits_per_row(self, rows: int) -> np.ndarray:
        """Exact bits of every row: the assignment's, or the ratio's row counts."""
        if self.assignment is not None:
            return self.assignment.bits_per_row()
        counts = self.ratio.row_counts(rows)
        return np.repeat([c.bits for c in counts], list(counts.values()))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ratio": self.label, "omega": self.omega}
        if self.assignment is not None:
            out["assignment"] = self.assignment.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateOption:
        assignment = data.get("assignment")
        return cls(
            Ratio.parse(data["ratio"]),
            float(data["omega"]),
            RowAssignment.from_dict(assignment) if assignment is not None else None,
        )


@dataclass(frozen=True)
class LayerOptions:
    """A layer's shape and its candidates, each label at most once."""

    shape: LayerShape
    options: tuple[CandidateOption, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))
        if not self.options:
            raise AllocationError(f"layer {self.shape.name!r} has no candidates")
        labels = [o.label for o in self.options]
        if len(set(labels)) != len(labels):
            raise AllocationError(f"layer {self.shape.name!r} lists a candidate twice: {labels}")
        for option in self.options:
            if option.assignment is not None and option.assignment.rows != self.shape.rows:
                raise AllocationError(
                    f"layer {self.shape.name!r}: candidate {option.label} assigns "
                    f"{option.assignment.rows} rows, the layer has {self.shape.rows}"
                )

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(o.label for o in self.options)

    def omegas(self) -> np.ndarray:
        return np.array([o.omega for o in self.options], dtype=np.float64)

    def weight_bits(self) -> np.ndarray:
        """Bits of the layer's weights under each candidate (scales and codes excluded)."""
        return np.array(
            [o.bits_per_row(self.shape.rows).sum() * self.shape.macs_per_row for o in self.options],
            dtype=np.float64,
        )

    def bops(self, act_bits: int) -> np.ndarray:
        """Bit operations per sample under each candidate: MACs x w-bits x a-bits."""
        return self.weight_bits() * self.shape.positions * act_bits

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape.to_dict(), "options": [o.to_dict() for o in self.options]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerOptions:
        return cls(
            LayerShape.from_dict(data["shape"]),
            tuple(CandidateOption.from_dict(o) for o in data["options"]),
        )


@dataclass(frozen=True)
class PerturbationTable:
    """Candidates and perturbations of every layer to allocate, by module name.

    >>> shape = LayerShape("fc", "linear", rows=4, macs_per_row=8, positions=1,
    ...                    input_elements=8, output_elements=4)
    >>> layer = LayerOptions(shape, (CandidateOption(Ratio.parse("fixed-4"), 0.5),
    ...                              CandidateOption(Ratio.parse("fixed-8"), 0.01)))
    >>> table = PerturbationTable({"fc": layer})
    >>> layer.weight_bits().tolist(), layer.bops(act_bits=8).tolist()
    ([128.0, 256.0], [1024.0, 2048.0])
    >>> PerturbationTable.from_dict(table.to_dict()) == table
    True
    """

    layers: Mapping[str, LayerOptions]
    granularity: str = "layer"  # omega from the layer's mean trace ("layer") or per row ("row")
    scale_method: str = "max"  # clip levels the errors were measured with

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", dict(self.layers))
        if not self.layers:
            raise AllocationError("a perturbation table needs at least one layer")
        for name, layer in self.layers.items():
            if layer.shape.name != name:
                raise AllocationError(f"layer {name!r} holds the shape of {layer.shape.name!r}")

    @property
    def total_weights(self) -> int:
        return sum(layer.shape.weights for layer in self.layers.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "version": TABLE_VERSION,
            "granularity": self.granularity,
            "scale_method": self.scale_method,
            "layers": {name: layer.to_dict() for name, layer in self.layers.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PerturbationTable:
        if not isinstance(data, Mapping) or data.get("format") != TABLE_FORMAT:
            raise AllocationError(f"not a perturbation table (format must be {TABLE_FORMAT!r})")
        if data.get("version") != TABLE_VERSION:
            raise AllocationError(f"perturbation table version {data.get('version')} unsupported")
        try:
            layers = {n: LayerOptions.from_dict(d) for n, d in data["layers"].items()}
            return cls(layers, data["granularity"], data["scale_method"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise AllocationError(f"malformed perturbation table: {exc!r}") from None

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PerturbationTable:
        return cls.from_dict(read_json(path, "perturbation table", AllocationError))
