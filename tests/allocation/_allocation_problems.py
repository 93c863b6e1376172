"""Small synthetic allocation problems, and their solutions by brute force."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mixq.allocation.costs import CostTable
from mixq.allocation.options import CandidateOption, LayerOptions, PerturbationTable
from mixq.plan import LayerShape
from mixq.ratio import Ratio

POOL = ("fixed-2", "fixed-3", "fixed-4", "fixed-8", "sp2-4", "pot-4", "sp2-4:0.5,fixed-8:0.5")


@dataclass(frozen=True)
class Problem:
    table: PerturbationTable
    latency: CostTable
    act_bits: dict[str, int]


def random_problem(rng: np.random.Generator, layers: int, candidates: int) -> Problem:
    options, latency = {}, {}
    for i in range(layers):
        name = f"layer{i}"
        shape = LayerShape(
            name,
            "conv2d",
            rows=int(rng.integers(2, 9)),
            macs_per_row=int(rng.integers(4, 40)),
            positions=int(rng.integers(1, 20)),
            input_elements=1,
            output_elements=1,
        )
        labels = rng.choice(len(POOL), size=candidates, replace=False)
        choices = tuple(CandidateOption(Ratio.parse(POOL[j]), float(rng.normal())) for j in labels)
        options[name] = LayerOptions(shape, choices)
        latency[name] = {c.label: float(rng.uniform(0.1, 2.0)) for c in choices}
    act_bits = {name: int(rng.choice([4, 8])) for name in options}
    return Problem(PerturbationTable(options), CostTable("latency", latency, "ms"), act_bits)


@dataclass(frozen=True)
class Totals:
    """Every combination of choices (one row each) and its totals."""

    choices: np.ndarray  # (combinations, layers) candidate index per layer
    omega: np.ndarray
    quantities: dict[str, np.ndarray]


def enumerate_plans(problem: Problem, ties: Sequence[Sequence[str]] = ()) -> Totals:
    table = problem.table
    names = list(table.layers)
    per_layer = [range(len(table.layers[n].options)) for n in names]
    choices = np.array(list(itertools.product(*per_layer)), dtype=np.int64)
    keep = np.ones(len(choices), dtype=bool)
    for tie in ties:
        labels = [np.array(table.layers[n].labels)[choices[:, names.index(n)]] for n in tie]
        for other in labels[1:]:
            keep &= other == labels[0]
    choices = choices[keep]
    total_weights = table.total_weights
    omega = np.zeros(len(choices))
    quantities = {k: np.zeros(len(choices)) for k in ("eq_bits", "weight_bits", "bops", "latency")}
    for column, name in enumerate(names):
        layer = table.layers[name]
        picked = choices[:, column]
        omega += layer.omegas()[picked]
        bits = layer.weight_bits()[picked]
        quantities["weight_bits"] += bits
        quantities["eq_bits"] += bits / total_weights
        quantities["bops"] += layer.bops(problem.act_bits[name])[picked]
        costs = np.array([problem.latency.cost(name, label) for label in layer.labels])
        quantities["latency"] += costs[picked]
    return Totals(choices, omega, quantities)


def best_feasible(totals: Totals, limits: dict[str, float]) -> float | None:
    """The least total omega among combinations within every limit (None if none is)."""
    feasible = np.ones(len(totals.omega), dtype=bool)
    for name, limit in limits.items():
        feasible &= totals.quantities[name] <= limit * (1 + 1e-12)
    return float(totals.omega[feasible].min()) if feasible.any() else None
