"""What a plan asks of the hardware, layer by layer: rows and MACs per candidate.

A layer's rows per candidate come from its exact row assignment when the plan has one, else
from its ratio (:meth:`mixq.ratio.Ratio.row_counts`, the rounding :func:`mixq.quantize`
uses). Every figure is per input sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mixq.errors import HardwareCostError
from mixq.plan import LayerPlan, LayerShape, Plan
from mixq.ratio import Ratio
from mixq.schemes import Candidate


@dataclass(frozen=True)
class LayerWork:
    """One planned layer: its shape, input activation bits and rows per candidate.

    >>> shape = LayerShape("fc", "linear", rows=4, macs_per_row=10, positions=1,
    ...                    input_elements=10, output_elements=4)
    >>> work = LayerWork(shape, act_bits=8, rows={Candidate.parse("sp2-4"): 3,
    ...                                          Candidate.parse("fixed-8"): 1})
    >>> work.macs, work.weight_bits, work.bops
    (40, 200, 1600)
    """

    shape: LayerShape
    act_bits: int
    rows: Mapping[Candidate, int]  # rows per candidate; sums to shape.rows

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", {c: n for c, n in self.rows.items() if n})
        if sum(self.rows.values()) != self.shape.rows:
            raise HardwareCostError(
                f"layer {self.shape.name}: rows per candidate sum to "
                f"{sum(self.rows.values())}, the layer has {self.shape.rows}"
            )

    @property
    def name(self) -> str:
        return self.shape.name

    def candidate_macs(self, candidate: Candidate) -> int:
        """MACs per sample done by the rows of ``candidate``."""
        return self.rows.get(candidate, 0) * self.shape.macs_per_row * self.shape.positions

    @property
    def macs(self) -> int:
        return self.shape.macs

    @property
    def weight_bits(self) -> int:
        """Bits of the layer's weights, each row at its candidate's bits."""
        return sum(n * c.bits for c, n in self.rows.items()) * self.shape.macs_per_row

    @property
    def bops(self) -> int:
        """Bit operations: each MAC weighted by its weight bits times the activation bits."""
        return sum(self.candidate_macs(c) * c.bits for c in self.rows) * self.act_bits


def layer_work(shapes: Mapping[str, LayerShape], plan: Plan, act_bits: int = 8) -> list[LayerWork]:
    """The planned layers in model order (the order of ``shapes``).

    ``act_bits`` applies where the plan leaves a layer's activation bits unset.
    """
    missing = [name for name in plan.layers if name not in shapes]
    if missing:
        raise HardwareCostError(
            f"the plan names layers the shapes lack: {', '.join(missing)}; measure the "
            "shapes of the model the plan was made for"
        )
    return [
        _work(shape, plan.layers[name], act_bits)
        for name, shape in shapes.items()
        if name in plan.layers
    ]


def _work(shape: LayerShape, layer: LayerPlan, default_act_bits: int) -> LayerWork:
    act = layer.act_bits if layer.act_bits is not None else default_act_bits
    if isinstance(act, bool) or not isinstance(act, int) or act < 1:
        raise HardwareCostError(
            f"layer {shape.name}: activation bits {act!r} cannot be costed; BOPs and "
            "hardware costs need an integer input (act_bits >= 1)"
        )
    if layer.assignment is not None:
        if layer.assignment.rows != shape.rows:
            raise HardwareCostError(
                f"layer {shape.name}: the plan assigns {layer.assignment.rows} rows, "
                f"the layer has {shape.rows}"
            )
        rows = layer.assignment.counts()
    else:
        rows = layer.ratio.row_counts(shape.rows)
    return LayerWork(shape, act, rows)


def uniform_plan(
    shapes: Mapping[str, LayerShape], ratio: str, *, edge_ratio: str | None = None
) -> Plan:
    """A plan with one ratio for every layer; ``edge_ratio`` (if given) for the first and
    last, as mixq's presets keep them at ``fixed-8``.

    >>> shapes = {n: LayerShape(n, "linear", 2, 3, 1, 3, 2) for n in ("a", "b", "c")}
    >>> plan = uniform_plan(shapes, "sp2-4:0.5,fixed-4:0.5", edge_ratio="fixed-8")
    >>> [str(layer.ratio) for layer in plan.layers.values()]
    ['fixed-8:1', 'sp2-4:0.5,fixed-4:0.5', 'fixed-8:1']
    """
    names = list(shapes)
    edges = {names[0], names[-1]} if edge_ratio is not None and names else set()
    return Plan(
        {
            name: LayerPlan(Ratio.parse(edge_ratio if edge_ratio and name in edges else ratio))
            for name in names
        },
        method="uniform",
    )
