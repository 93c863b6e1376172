"""DFQ: search bit widths by gradient descent, then round them to meet the target exactly.

The layers to search are converted as mixq converts them (BatchNorm folded, activations
quantised), then each layer's weight quantiser is replaced by a
:class:`~mixq.dfq.quantizer.FractionalBitsQuantizer`. Weights, clip levels and bit widths
train together on ``task loss + penalty_weight * max(0, cost(b) / target - 1)``, where the
cost is the weights' size in bits (or their BOPs) and is linear in the bit widths. The real
bit widths are then rounded (:func:`~mixq.dfq.rounding.round_bits`), never above the
target, into a :class:`mixq.plan.Plan` with every row's exact candidate.

The plan is what DFQ hands on: apply it to the float model with ``mixq.quantize(model,
recipe, plan=plan)`` and fine-tune, so DFQ is compared with the other allocation methods
from the same starting weights and training budget.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from mixq.assignment import RowAssignment
from mixq.batches import cycle_pairs
from mixq.convert import quantize
from mixq.dfq.quantizer import FractionalBitsQuantizer, Granularity
from mixq.dfq.rounding import round_bits
from mixq.errors import AllocationError
from mixq.nn.layers import QuantConv2d, QuantLinear
from mixq.plan import LayerPlan, LayerShape, Plan
from mixq.ratio import Ratio
from mixq.recipe import LayerConfig, Recipe, Rule
from mixq.schemes import BITS_RANGE, Candidate, parse_scheme
from mixq.shapes import measure_layer_shapes
from mixq.swap import quantizable_layer_names

# The search runs for a number of steps, not epochs: it goes over the data again.
_RE_ITERABLE = "; pass a re-iterable (a list or a DataLoader), or lower steps"


@dataclass(frozen=True)
class DfqConfig:
    """What DFQ searches and how; give exactly one of the two targets."""

    target_eq_bits: float | None = None  # mean weight bits over the searched layers
    target_bops: float | None = None  # bit operations per sample over the searched layers
    granularity: Granularity = "row"  # one bit width per row (output channel) or per layer
    scheme: str = "fixed"  # the grid at every bit width
    min_bits: int | None = None  # default: the scheme's smallest (2 for fixed)
    max_bits: int | None = None  # default: the scheme's largest (8)
    init_bits: float | None = None  # default: max_bits, so the penalty pulls bits down
    penalty_weight: float = 1.0  # weight of max(0, cost / target - 1) in the loss
    steps: int = 200
    weight_lr: float = 1e-4
    scale_lr: float = 1e-3
    bits_lr: float = 0.05
    act_bits: int = 8  # activations of the searched layers, also in the BOPs
    calibration_batches: int = 4  # for the activation clips before the search
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.target_eq_bits is None) == (self.target_bops is None):
            raise AllocationError("give exactly one of target_eq_bits and target_bops")
        target = self.target_eq_bits if self.target_eq_bits is not None else self.target_bops
        if not (isinstance(target, int | float) and math.isfinite(target) and target > 0):
            raise AllocationError(f"the DFQ target must be a positive number, got {target!r}")
        if self.steps < 0 or self.calibration_batches < 1:
            raise AllocationError("steps must be >= 0 and calibration_batches >= 1")
        low, high = BITS_RANGE[parse_scheme(self.scheme)]
        if not low <= self.bits_range[0] <= self.bits_range[1] <= high:
            raise AllocationError(
                f"{self.scheme} supports {low}..{high} bits, got {self.bits_range[0]}.."
                f"{self.bits_range[1]}"
            )

    @property
    def bits_range(self) -> tuple[int, int]:
        low, high = BITS_RANGE[parse_scheme(self.scheme)]
        return (
            low if self.min_bits is None else self.min_bits,
            high if self.max_bits is None else self.max_bits,
        )


@dataclass(frozen=True)
class DfqStep:
    step: int
    task_loss: float
    cost_ratio: float  # cost of the real bit widths / target


@dataclass(frozen=True)
class DfqResult:
    plan: Plan  # rounded, meets the target
    real_bits: Mapping[str, np.ndarray]  # each row's bit width before rounding
    history: tuple[DfqStep, ...] = field(default=())


def dfq_search(
    model: nn.Module,
    data: Iterable[Any],
    config: DfqConfig,
    *,
    layers: Sequence[str] | None = None,
    progress: bool = True,
) -> DfqResult:
    """Search per-row (or per-layer) bit widths of ``layers`` (default: all) on ``data``,
    ``(inputs, targets)`` batches, and return the rounded plan (method ``dfq``)."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    names = _check_layers(model, layers)
    stream = cycle_pairs(data, AllocationError, ran_out_hint=_RE_ITERABLE)
    calibration = list(itertools.islice(stream, config.calibration_batches))
    shapes = measure_layer_shapes(model, calibration[0])
    search = _search_model(model, names, config, calibration)
    quantizers = {n: _fractional(search.get_submodule(n), config) for n in names}
    unit_costs = {n: _unit_costs(shapes[n], quantizers[n], config) for n in names}
    target = _target(config, shapes, names)
    history = _train(search, quantizers, unit_costs, target, stream, config, progress)
    real_bits = {n: quantizers[n].row_bits().detach().double().cpu().numpy() for n in names}
    units = [quantizers[n].bits.detach().double().cpu().numpy() for n in names]
    low, high = config.bits_range
    rounded = round_bits(
        np.clip(np.concatenate(units), low, high),
        np.concatenate([unit_costs[n].cpu().numpy() for n in names]),
        target,
        min_bits=low,
        max_bits=high,
    )
    plan = _plan(names, quantizers, rounded, config, shapes, target, real_bits, history, start)
    return DfqResult(plan, real_bits, tuple(history))


def _check_layers(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    available = quantizable_layer_names(model)
    names = list(dict.fromkeys(layers)) if layers is not None else available
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise AllocationError(
            f"DFQ needs Conv2d/Linear layers of the model; unknown: {unknown}; "
            f"available: {', '.join(available) or 'none'}"
        )
    return names


def _search_model(
    model: nn.Module, names: list[str], config: DfqConfig, calibration: list[Any]
) -> nn.Module:
    top = Candidate(parse_scheme(config.scheme), config.bits_range[1])
    others = [n for n in quantizable_layer_names(model) if n not in names]
    recipe = Recipe(
        LayerConfig(Ratio.uniform(top), act_bits=config.act_bits),
        rules=tuple(Rule(n, skip=True) for n in others),
        weight_rounding="nearest",
    )
    search = quantize(
        model,
        recipe,
        calibration_data=calibration,
        calibration_batches=len(calibration),
        progress=False,
    )
    return search.train()


def _fractional(layer: nn.Module, config: DfqConfig) -> FractionalBitsQuantizer:
    assert isinstance(layer, QuantConv2d | QuantLinear)
    low, high = config.bits_range
    quantizer = FractionalBitsQuantizer(
        layer.weight_quant.alpha,
        layer.weight[0].numel(),
        config.scheme,
        init_bits=config.init_bits if config.init_bits is not None else float(high),
        min_bits=low,
        max_bits=high,
        granularity=config.granularity,
    ).to(layer.weight.device)
    layer.weight_quant = quantizer  # type: ignore[assignment]  # same call signature
    return quantizer


def _unit_costs(shape: LayerShape, quantizer: FractionalBitsQuantizer, config: DfqConfig) -> Tensor:
    """What one bit of each unit (row, or the whole layer) costs in the target's measure."""
    per_row = float(shape.macs_per_row)
    if config.target_bops is not None:
        per_row *= shape.positions * config.act_bits
    rows_per_unit = 1 if config.granularity == "row" else shape.rows
    return torch.full((quantizer.bits.numel(),), per_row * rows_per_unit, dtype=torch.float64)


def _target(config: DfqConfig, shapes: Mapping[str, LayerShape], names: list[str]) -> float:
    if config.target_bops is not None:
        return float(config.target_bops)
    assert config.target_eq_bits is not None
    return config.target_eq_bits * sum(shapes[n].weights for n in names)


def _train(
    search: nn.Module,
    quantizers: Mapping[str, FractionalBitsQuantizer],
    unit_costs: Mapping[str, Tensor],
    target: float,
    stream: Iterator[tuple[Tensor, Tensor]],
    config: DfqConfig,
    progress: bool,
) -> list[DfqStep]:
    bits = [q.bits for q in quantizers.values()]
    alphas = [q.alpha for q in quantizers.values()]
    special = {id(p) for p in bits + alphas}
    weights = [p for p in search.parameters() if id(p) not in special and p.requires_grad]
    optimizer = torch.optim.Adam(
        [
            {"params": weights, "lr": config.weight_lr},
            {"params": alphas, "lr": config.scale_lr},
            {"params": bits, "lr": config.bits_lr},
        ]
    )
    device = next(search.parameters()).device
    costs = {n: c.to(device=device, dtype=torch.float32) for n, c in unit_costs.items()}
    history = []
    for step in tqdm(
        range(config.steps), desc="dfq", disable=None if progress else True, leave=False
    ):
        inputs, targets = next(stream)
        task = F.cross_entropy(search(inputs.to(device)), targets.to(device))
        cost = sum(
            ((costs[n] * q.bits.clamp(*config.bits_range)).sum() for n, q in quantizers.items()),
            torch.zeros((), device=device),
        )
        ratio = cost / target
        loss = task + config.penalty_weight * F.relu(ratio - 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for q in quantizers.values():
            q.project()
        history.append(DfqStep(step, float(task.detach()), float(ratio.detach())))
    return history


def _plan(
    names: list[str],
    quantizers: Mapping[str, FractionalBitsQuantizer],
    rounded: np.ndarray,
    config: DfqConfig,
    shapes: Mapping[str, LayerShape],
    target: float,
    real_bits: Mapping[str, np.ndarray],
    history: list[DfqStep],
    start: float,
) -> Plan:
    scheme = parse_scheme(config.scheme)
    layers: dict[str, LayerPlan] = {}
    assignments: dict[str, RowAssignment] = {}
    offset = 0
    for name in names:
        units = quantizers[name].bits.numel()
        chosen = rounded[offset : offset + units]
        offset += units
        per_row = np.broadcast_to(chosen, (quantizers[name].rows,))
        assignment = RowAssignment.from_rows([Candidate(scheme, int(b)) for b in per_row])
        assignments[name] = assignment
        counts = assignment.counts()
        ratio = Ratio(tuple((c, n / assignment.rows) for c, n in counts.items()))
        layers[name] = LayerPlan(ratio, config.act_bits, assignment)
    total = sum(shapes[n].weights for n in names)
    real_eq = sum(float(real_bits[n].sum()) * shapes[n].macs_per_row for n in names) / total
    weight_bits = {
        n: float(assignments[n].bits_per_row().sum()) * shapes[n].macs_per_row for n in names
    }
    metadata = {
        "target": target,
        "weight_bits": sum(weight_bits.values()),
        "bops": sum(b * shapes[n].positions * config.act_bits for n, b in weight_bits.items()),
        "target_kind": "bops" if config.target_bops is not None else "weight_bits",
        "target_eq_bits": config.target_eq_bits,
        "eq_bits": Plan(layers).eq_bits(shapes),
        "real_eq_bits": real_eq,
        "granularity": config.granularity,
        "scheme": scheme.value,
        "steps": config.steps,
        "final_task_loss": history[-1].task_loss if history else None,
        "search_s": time.perf_counter() - start,
    }
    return Plan(layers, method="dfq", metadata=metadata)
