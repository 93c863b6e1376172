"""HAWQ-V3's integer linear program, and mixq's joint scheme-and-precision variant.

One binary ``x[g, c]`` per (layer group, candidate), exactly one candidate per group;
minimise ``sum omega[g, c] x[g, c]`` subject to one linear limit per budgeted quantity:
mean or total weight bits, BOPs (MACs x w-bits x a-bits) and the sum of any user cost table
(a latency lookup table, FPGA LUT or DSP work). Tied layers (a residual downsample and its
branch) form one group: they take one candidate and their costs add. Solved exactly with
``scipy.optimize.milp`` (HiGHS). Torch-free.

The two methods differ only in their candidates and perturbations, which
:func:`mixq.sensitivity.perturbation_table` computes: HAWQ-V3 offers one scheme-and-bits
per layer with ``omega = trace / n * ||Q(W) - W||^2``; the joint ILP offers ratios of
schemes and precisions with ``omega`` summed per row from per-row traces and errors under
the ratio's row assignment.

A throughput budget (``Budget(fpga=FpgaThroughput(device, images_per_s))``) limits the
modelled cycles per image on a fixed accelerator (:mod:`mixq.allocation.fpga_budget`):
each (layer, option) has its exact ``max(compute, transfer)`` cycles, so the limit is
linear; the one model-wide switch (weights in block RAM or streamed) is solved as two
cases, and the better plan of the two is returned.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from mixq.allocation.budget import Budget
from mixq.allocation.costs import CostTable
from mixq.allocation.fpga_budget import CYCLES, ONCHIP_BITS, ThroughputCosts, throughput_costs
from mixq.allocation.options import CandidateOption, LayerOptions, PerturbationTable
from mixq.errors import AllocationError, InfeasibleBudgetError
from mixq.plan import LayerPlan, Plan

METHODS: tuple[str, ...] = ("hawq-v3-ilp", "joint-ilp")

# A limit met within this relative slack counts as met (float sums of bits and BOPs).
_RELATIVE_SLACK = 1e-9
_SOLVE_ATTEMPTS = 3
_INFEASIBLE = "infeasible"
# Per-option cycles on the fixed accelerator, with the weights in block RAM or streamed.
_ON_CHIP = "fpga_cycles_weights_on_chip"
_STREAMED = "fpga_cycles_weights_streamed"


@dataclass(frozen=True)
class _Group:
    """Tied layers that take one candidate; ``labels`` in the first layer's order."""

    names: tuple[str, ...]
    labels: tuple[str, ...]


def solve_ilp(
    table: PerturbationTable,
    budget: Budget,
    *,
    cost_tables: Sequence[CostTable] = (),
    ties: Sequence[Sequence[str]] = (),
    act_bits: int | Mapping[str, int] = 8,
    method: str = "hawq-v3-ilp",
    time_limit_s: float | None = None,
) -> Plan:
    """The plan with the least total perturbation that meets every limit of ``budget``.

    Args:
        table: each layer's candidates and their perturbations.
        budget: the limits; a limit named in ``budget.costs`` needs a cost table of that name.
        cost_tables: per-(layer, candidate) costs, summed over layers.
        ties: groups of layer names that must take the same candidate (overlapping groups
            merge); tied layers must offer the same candidates.
        act_bits: activation bits per layer (or one for all) for BOPs; the plan fixes them.
        method: recorded as the plan's method.
        time_limit_s: stop HiGHS after this long (the plan then says it is not proven optimal).

    Raises:
        InfeasibleBudgetError: a limit below what the smallest choice needs, or limits that
            together admit no plan; the message gives the smallest budget for each limit.
        AllocationError: unknown layers in ties or cost tables, missing costs, bad inputs.
    """
    names = list(table.layers)
    bits = _act_bits_per_layer(names, act_bits)
    groups = _groups(table, ties)
    throughput = throughput_costs(budget.fpga, table, bits) if budget.fpga else None
    extra = (
        {} if throughput is None else {_ON_CHIP: throughput.on_chip, _STREAMED: throughput.streamed}
    )
    quantities = _quantities(table, budget, cost_tables, bits, groups, extra)
    limits = budget.limits()
    minimums = {q: sum(float(c.min()) for c in costs) for q, costs in quantities.items()}
    _check_alone(limits, minimums)
    omegas = [
        np.sum(
            [_aligned(table.layers[n], table.layers[n].omegas(), g.labels) for n in g.names],
            axis=0,
        )
        for g in groups
    ]
    base = {q: (quantities[q], limits[q]) for q in limits}
    cases = [base] if throughput is None else _throughput_cases(base, quantities, throughput)
    start = time.perf_counter()
    choice, status = None, _INFEASIBLE
    best = np.inf
    for case in cases:
        case_choice, case_status = _solve(omegas, case, time_limit_s)
        if case_choice is None and case_status != _INFEASIBLE:
            raise AllocationError(f"HiGHS stopped without a plan: {case_status}")
        value = _total(omegas, case_choice) if case_choice is not None else np.inf
        if value < best:
            choice, status, best = case_choice, case_status, value
    solve_s = time.perf_counter() - start
    if choice is None:
        alone = {q: minimums[q] for q in limits}
        if throughput is not None:
            alone[CYCLES] = min(minimums[_ON_CHIP], minimums[_STREAMED])
        raise InfeasibleBudgetError(
            "the limits together admit no plan, though each alone does; "
            f"the smallest budget of each alone: {_describe(alone)}",
            alone,
        )
    used = {
        q: float(sum(c[i] for c, i in zip(costs, choice, strict=True)))
        for q, costs in quantities.items()
    }
    layers = {}
    for group, index in zip(groups, choice, strict=True):
        for name in group.names:
            option = _option(table.layers[name], group.labels[index])
            layers[name] = LayerPlan(option.ratio, bits[name], option.assignment)
    metadata = {
        "objective": float(sum(o[i] for o, i in zip(omegas, choice, strict=True))),
        "budgets": limits,
        "used": used,
        "minimums": minimums,
        "solve_s": solve_s,
        "status": status,
        "variables": sum(len(g.labels) for g in groups),
        "groups": len(groups),
        "ties": [list(g.names) for g in groups if len(g.names) > 1],
        "granularity": table.granularity,
        "scale_method": table.scale_method,
    }
    if throughput is not None:
        assert budget.fpga is not None
        metadata["fpga"] = _throughput_report(budget, throughput, used)
    return Plan({n: layers[n] for n in names}, method=method, metadata=metadata)


def _act_bits_per_layer(names: list[str], act_bits: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(act_bits, Mapping):
        missing = [n for n in names if n not in act_bits]
        if missing:
            raise AllocationError(f"act_bits gives no value for layers {missing}")
        values = {n: act_bits[n] for n in names}
    else:
        values = dict.fromkeys(names, act_bits)
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 16:
            raise AllocationError(
                f"act_bits of {name!r} must be an integer in 0..16, got {value!r}"
            )
    return values


def _groups(table: PerturbationTable, ties: Sequence[Sequence[str]]) -> list[_Group]:
    """Union of overlapping ties; every other layer is a group of its own, in table order."""
    parent = {name: name for name in table.layers}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for tie in ties:
        unknown = [n for n in tie if n not in parent]
        if unknown:
            raise AllocationError(f"tied layers {unknown} are not in the perturbation table")
        for name in tie[1:]:
            parent[root(name)] = root(tie[0])
    members: dict[str, list[str]] = {}
    for name in table.layers:
        members.setdefault(root(name), []).append(name)
    groups = []
    for names in members.values():
        labels = table.layers[names[0]].labels
        for other in names[1:]:
            if set(table.layers[other].labels) != set(labels):
                raise AllocationError(
                    f"tied layers {names[0]!r} and {other!r} offer different candidates: "
                    f"{sorted(labels)} vs {sorted(table.layers[other].labels)}"
                )
        groups.append(_Group(tuple(names), labels))
    return groups


def _option(layer: LayerOptions, label: str) -> CandidateOption:
    return layer.options[layer.labels.index(label)]


def _aligned(layer: LayerOptions, values: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """``values`` (in the layer's candidate order) reordered to ``labels``."""
    return np.array([values[layer.labels.index(label)] for label in labels], dtype=np.float64)


def _quantities(
    table: PerturbationTable,
    budget: Budget,
    cost_tables: Sequence[CostTable],
    act_bits: Mapping[str, int],
    groups: list[_Group],
    extra: Mapping[str, Mapping[str, np.ndarray]],
) -> dict[str, list[np.ndarray]]:
    """Per group, the cost of each candidate in every quantity that is limited or reported."""
    by_name = {t.name: t for t in cost_tables}
    missing = sorted(set(budget.costs) - set(by_name))
    if missing:
        raise AllocationError(f"the budget limits {missing} but no cost table has that name")
    total_weights = table.total_weights

    def per_layer(name: str) -> dict[str, np.ndarray]:
        layer = table.layers[name]
        weight_bits = layer.weight_bits()
        values = {
            "eq_bits": weight_bits / total_weights,
            "weight_bits": weight_bits,
            "bops": layer.bops(act_bits[name]),
        }
        for cost_name in budget.costs:
            values[cost_name] = np.array(
                [by_name[cost_name].cost(name, label) for label in layer.labels]
            )
        for key, per_layer_values in extra.items():
            values[key] = per_layer_values[name]
        return values

    quantities: dict[str, list[np.ndarray]] = {}
    for group in groups:
        sums: dict[str, np.ndarray] = {}
        for name in group.names:
            for key, values in per_layer(name).items():
                aligned = _aligned(table.layers[name], values, group.labels)
                sums[key] = sums[key] + aligned if key in sums else aligned
        for key, values in sums.items():
            quantities.setdefault(key, []).append(values)
    return quantities


def _throughput_cases(
    base: dict[str, tuple[list[np.ndarray], float]],
    quantities: Mapping[str, list[np.ndarray]],
    throughput: ThroughputCosts,
) -> list[dict[str, tuple[list[np.ndarray], float]]]:
    """The limits of the two memory cases, each with ``base``; a case out of reach alone
    is left out, and a target neither case reaches is refused with the fastest plan's."""
    limit = float(throughput.limit_cycles)
    on_chip = base | {
        CYCLES: (quantities[_ON_CHIP], limit),
        ONCHIP_BITS: (quantities["weight_bits"], float(throughput.onchip_capacity_bits)),
    }
    streamed = base | {CYCLES: (quantities[_STREAMED], limit)}
    fastest = _fastest_cycles(quantities, throughput)
    if fastest > limit:
        raise InfeasibleBudgetError(
            f"FPGA throughput target {throughput.target_images_per_s:.6g} images/s is out "
            f"of reach on {throughput.design.device}: the fastest plan on this design does "
            f"{throughput.images_per_s(fastest):.6g} images/s ({fastest:.0f} cycles per image "
            f"at {throughput.clock_hz / 1e6:g} MHz, limit {limit:.0f})",
            {CYCLES: fastest},
        )
    return [
        case
        for case in (on_chip, streamed)
        if all(sum(float(c.min()) for c in costs) <= lim for costs, lim in case.values())
    ]


def _fastest_cycles(
    quantities: Mapping[str, list[np.ndarray]], throughput: ThroughputCosts
) -> float:
    """The fewest cycles per image any plan reaches: every layer at its fastest with the
    weights streamed, or the fastest plan whose weights fit on chip."""
    streamed = sum(float(c.min()) for c in quantities[_STREAMED])
    capacity = float(throughput.onchip_capacity_bits)
    choice, _ = _solve(
        list(quantities[_ON_CHIP]), {"bits": (quantities["weight_bits"], capacity)}, None
    )
    if choice is None:
        return streamed
    return min(streamed, _total(quantities[_ON_CHIP], choice))


def _throughput_report(
    budget: Budget, throughput: ThroughputCosts, used: Mapping[str, float]
) -> dict[str, object]:
    """The plan's modelled throughput on the fixed design (weights on chip iff they fit)."""
    assert budget.fpga is not None
    on_chip = used["weight_bits"] <= throughput.onchip_capacity_bits
    cycles = used[_ON_CHIP] if on_chip else used[_STREAMED]
    return {
        **budget.fpga.to_dict(),
        "target_images_per_s": budget.fpga.images_per_s,
        "limit_cycles": throughput.limit_cycles,
        "cycles": cycles,
        "modelled_images_per_s": throughput.images_per_s(cycles),
        "weights_on_chip": on_chip,
        "onchip_capacity_bits": throughput.onchip_capacity_bits,
        "clock_hz": throughput.clock_hz,
        "design": throughput.design.to_dict(),
    }


def _total(values: Sequence[np.ndarray], choice: Sequence[int]) -> float:
    return float(sum(v[i] for v, i in zip(values, choice, strict=True)))


def _check_alone(limits: Mapping[str, float], minimums: Mapping[str, float]) -> None:
    short = [q for q, limit in limits.items() if limit < minimums[q] * (1 - _RELATIVE_SLACK)]
    if short:
        detail = ", ".join(f"{q} {limits[q]:.6g} < {minimums[q]:.6g}" for q in short)
        raise InfeasibleBudgetError(
            f"budget too small: {detail}; the smallest budget of each limit alone: "
            f"{_describe({q: minimums[q] for q in limits})}",
            {q: minimums[q] for q in limits},
        )


def _describe(values: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.6g}" for k, v in values.items())


def _solve(
    omegas: list[np.ndarray],
    limited: Mapping[str, tuple[list[np.ndarray], float]],
    time_limit_s: float | None,
) -> tuple[list[int] | None, str]:
    """The chosen candidate index per group, or ``None`` if no assignment is feasible."""
    sizes = [len(o) for o in omegas]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n = int(offsets[-1])
    # Only the excess over each group's best candidate matters; scaled to order 1, so that
    # HiGHS's absolute gap does not swallow small perturbations.
    excess = np.concatenate([o - o.min() for o in omegas])
    objective = excess / excess.max() if excess.max() > 0 else excess
    rows = np.repeat(np.arange(len(sizes)), sizes)
    one_each = LinearConstraint(
        csr_array((np.ones(n), (rows, np.arange(n))), shape=(len(sizes), n)), 1, 1
    )
    coefficients = {q: np.concatenate(costs) for q, (costs, _) in limited.items()}
    scales = {q: max(float(np.abs(c).max()), 1e-300) for q, c in coefficients.items()}
    slack = dict.fromkeys(limited, 0.0)
    options = {"mip_rel_gap": 0.0, "presolve": True}
    if time_limit_s is not None:
        options["time_limit"] = time_limit_s
    for _ in range(_SOLVE_ATTEMPTS):
        constraints = [one_each]
        for q, (_, limit) in limited.items():
            row = (coefficients[q] / scales[q]).reshape(1, -1)
            constraints.append(LinearConstraint(row, -np.inf, (limit - slack[q]) / scales[q]))
        result = milp(
            objective,
            integrality=np.ones(n),
            bounds=Bounds(0, 1),
            constraints=constraints,
            options=options,
        )
        if result.x is None:
            return None, _INFEASIBLE if result.status == 2 else result.message
        choice = [int(np.argmax(result.x[offsets[g] : offsets[g + 1]])) for g in range(len(sizes))]
        picked = np.zeros(n)
        picked[offsets[:-1] + np.array(choice)] = 1.0
        # HiGHS meets rows within its feasibility tolerance; the plan must meet them exactly.
        over = {
            q: float(coefficients[q] @ picked) - limit
            for q, (_, limit) in limited.items()
            if float(coefficients[q] @ picked) > limit * (1 + _RELATIVE_SLACK)
        }
        if not over:
            return choice, result.message
        for q, excess_amount in over.items():
            slack[q] += 2 * excess_amount
    return None, _INFEASIBLE
