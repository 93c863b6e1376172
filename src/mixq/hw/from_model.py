"""A plan read back from a quantised model, so that what was quantised can be costed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from mixq.errors import HardwareCostError
from mixq.plan import LayerPlan, Plan
from mixq.ratio import Ratio
from mixq.schemes import Candidate


class _LayerCounts(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def rows(self) -> int: ...
    @property
    def counts(self) -> Mapping[str, int]: ...
    @property
    def act_bits(self) -> int: ...


class _Summary(Protocol):
    @property
    def layers(self) -> Sequence[_LayerCounts]: ...


def plan_from_summary(summary: _Summary, method: str = "quantized") -> Plan:
    """The plan of a quantised model, from :func:`mixq.describe` (rows per candidate and
    activation bits of each quantised layer). Ratios are the exact row fractions, so
    :meth:`~mixq.ratio.Ratio.row_counts` gives the model's counts back.

    >>> from types import SimpleNamespace as layer
    >>> summary = layer(layers=[layer(name="conv", rows=3, act_bits=4,
    ...                               counts={"sp2-4": 2, "fixed-8": 1})])
    >>> plan = plan_from_summary(summary)
    >>> {str(c): n for c, n in plan.layers["conv"].ratio.row_counts(3).items()}
    {'sp2-4': 2, 'fixed-8': 1}
    """
    layers = {}
    for layer in summary.layers:
        if layer.rows <= 0 or sum(layer.counts.values()) != layer.rows:
            raise HardwareCostError(
                f"layer {layer.name}: rows per candidate {layer.counts} do not add up to "
                f"its {layer.rows} rows"
            )
        shares: dict[str | Candidate, float] = {
            name: n / layer.rows for name, n in layer.counts.items() if n
        }
        # 0 (a float input) stays 0: the cost models refuse it by name, not silently.
        layers[layer.name] = LayerPlan(Ratio.parse(shares), layer.act_bits)
    if not layers:
        raise HardwareCostError("the model has no quantised layer to cost")
    return Plan(layers, method=method)
