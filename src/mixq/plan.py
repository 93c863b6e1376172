"""Plans and layer shapes: the typed values that allocation produces and cost models read.

Torch-free on purpose: allocation (ILP, DFQ rounding, RMSMP rules) and hardware cost models
work on these values alone. A :class:`Plan` says, per layer, which ratio of candidates (or
which exact row assignment) and which activation bits to use; :func:`mixq.quantize` applies
it on top of a recipe. A :class:`LayerShape` says how much work a layer does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixq.assignment import RowAssignment
from mixq.errors import RecipeError
from mixq.io import atomic_write_text
from mixq.jsonfile import read_json
from mixq.ratio import Ratio

if TYPE_CHECKING:  # recipe.py pulls in the torch quantisers; plans must not
    from mixq.recipe import Recipe

PLAN_VERSION = 1


@dataclass(frozen=True)
class LayerShape:
    """The work of one Conv2d/Linear layer, as cost models need it.

    ``macs_per_row`` is the multiply-accumulates one row (output channel) does per output
    position; ``positions`` is the number of output positions per input sample (H*W of a
    conv output, tokens of a Linear); so the layer's MACs per sample are
    ``rows * macs_per_row * positions``.
    """

    name: str
    kind: str  # "conv2d" or "linear"
    rows: int  # output channels / features
    macs_per_row: int  # elements of a weight row: in/groups * kh * kw, or in_features
    positions: int  # output positions per sample
    input_elements: int  # activation elements read per sample
    output_elements: int  # activation elements written per sample

    @property
    def weights(self) -> int:
        return self.rows * self.macs_per_row

    @property
    def macs(self) -> int:
        return self.rows * self.macs_per_row * self.positions

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerShape:
        return cls(**data)


@dataclass(frozen=True)
class LayerPlan:
    """What one layer becomes: a ratio of candidates (or an exact row assignment)."""

    ratio: Ratio
    act_bits: int | None = None  # None: keep the recipe's
    assignment: RowAssignment | None = None  # exact rows; must agree with ratio's candidates

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", Ratio.parse(self.ratio))
        if self.assignment is not None and not set(self.assignment.candidates) <= set(
            self.ratio.candidates
        ):
            raise RecipeError("a layer plan's assignment uses candidates its ratio lacks")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ratio": self.ratio.to_dict()}
        if self.act_bits is not None:
            out["act_bits"] = self.act_bits
        if self.assignment is not None:
            out["assignment"] = self.assignment.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerPlan:
        assignment = data.get("assignment")
        return cls(
            Ratio.parse(data["ratio"]),
            data.get("act_bits"),
            RowAssignment.from_dict(assignment) if assignment is not None else None,
        )


@dataclass(frozen=True)
class Plan:
    """Per-layer decisions of an allocation method, by module name.

    >>> plan = Plan({"conv": LayerPlan(Ratio.parse("fixed-8"))}, method="hawq-v3-ilp")
    >>> Plan.from_dict(plan.to_dict()) == plan
    True
    """

    layers: Mapping[str, LayerPlan]
    method: str = "manual"
    metadata: Mapping[str, Any] = field(default_factory=dict)  # objective, budgets, ...
    version: int = PLAN_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", dict(self.layers))
        if self.version != PLAN_VERSION:
            raise RecipeError(f"plan version {self.version} is not supported ({PLAN_VERSION})")

    def apply_to(self, recipe: Recipe) -> Recipe:
        """The recipe with one exact-name rule per planned layer appended (they win)."""
        from mixq.recipe import Recipe, Rule

        rules = tuple(
            Rule(name, ratio=layer.ratio, act_bits=layer.act_bits)
            for name, layer in self.layers.items()
        )
        return Recipe(**{**recipe.__dict__, "rules": recipe.rules + rules})

    def eq_bits(self, shapes: Mapping[str, LayerShape]) -> float:
        """Weight-count-weighted mean bits over the planned layers (SPEC section 7)."""
        total = weighted = 0.0
        for name, layer in self.layers.items():
            weights = shapes[name].weights
            bits = layer.assignment.eq_bits if layer.assignment else layer.ratio.eq_bits
            total += weights
            weighted += weights * bits
        return weighted / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "method": self.method,
            "metadata": dict(self.metadata),
            "layers": {name: layer.to_dict() for name, layer in self.layers.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        try:
            layers = {n: LayerPlan.from_dict(d) for n, d in data["layers"].items()}
            return cls(
                layers,
                data.get("method", "manual"),
                data.get("metadata", {}),
                data.get("version", PLAN_VERSION),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise RecipeError(f"malformed plan: {exc}") from None

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        return cls.from_dict(read_json(path, "plan file", RecipeError))
