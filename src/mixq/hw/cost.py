"""The cost-model interface, and the device-free model: weight bits, size and BOPs.

A cost model takes a model's layer shapes (:func:`mixq.shapes.measure_layer_shapes`) and a
:class:`~mixq.plan.Plan` and returns a :class:`~mixq.hw.report.CostReport`. The compute
model below needs nothing else; :class:`mixq.hw.fpga.FpgaCostModel` adds cycles and
FPGA resources.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from mixq.hw.report import CostReport, LayerCost
from mixq.hw.workload import LayerWork, layer_work
from mixq.plan import LayerShape, Plan


class CostModel(Protocol):
    """Anything that costs a plan on a model's layer shapes."""

    name: str

    def cost(
        self,
        shapes: Mapping[str, LayerShape],
        plan: Plan,
        *,
        act_bits: int = 8,
        model: str = "model",
    ) -> CostReport: ...


class ComputeCostModel:
    """Device-free costs per layer: weight bits, size and BOPs (MACs x w-bits x a-bits).

    >>> shapes = {"fc": LayerShape("fc", "linear", 4, 10, 1, 10, 4)}
    >>> report = ComputeCostModel().cost(shapes, Plan.from_dict(
    ...     {"layers": {"fc": {"ratio": {"sp2-4": 0.5, "fixed-8": 0.5}, "act_bits": 4}}}))
    >>> report.totals.bops, report.totals.weight_bits, report.eq_bits
    (960, 240, 6.0)
    """

    name = "compute"

    def cost(
        self,
        shapes: Mapping[str, LayerShape],
        plan: Plan,
        *,
        act_bits: int = 8,
        model: str = "model",
    ) -> CostReport:
        layers = [compute_layer_cost(work) for work in layer_work(shapes, plan, act_bits)]
        return CostReport(model, self.name, tuple(layers), unplanned=unplanned(shapes, plan))


def compute_layer_cost(work: LayerWork) -> LayerCost:
    return LayerCost(
        name=work.name,
        rows={str(c): n for c, n in work.rows.items()},
        act_bits=work.act_bits,
        weights=work.shape.weights,
        macs=work.macs,
        weight_bits=work.weight_bits,
        bops=work.bops,
    )


def unplanned(shapes: Mapping[str, LayerShape], plan: Plan) -> tuple[str, ...]:
    """Layers with a shape but no plan entry (a plan leaves them in float)."""
    return tuple(name for name in shapes if name not in plan.layers)
