"""The ILP against brute force, tied layers, infeasible budgets, and its plans."""

from __future__ import annotations

import numpy as np
import pytest
from _allocation_problems import Problem, best_feasible, enumerate_plans, random_problem

from mixq.allocation.budget import Budget
from mixq.allocation.costs import CostTable
from mixq.allocation.ilp import solve_ilp
from mixq.allocation.options import CandidateOption, LayerOptions, PerturbationTable
from mixq.errors import AllocationError, InfeasibleBudgetError
from mixq.plan import LayerShape, Plan
from mixq.ratio import Ratio


def _limits_between(rng: np.random.Generator, totals, names: tuple[str, ...]) -> dict[str, float]:
    """Limits drawn between each quantity's smallest and largest total."""
    limits = {}
    for name in names:
        values = totals.quantities[name]
        limits[name] = float(values.min() + rng.uniform(0.05, 0.7) * np.ptp(values))
    return limits


def _budget(limits: dict[str, float]) -> Budget:
    return Budget(
        eq_bits=limits.get("eq_bits"),
        weight_bits=limits.get("weight_bits"),
        bops=limits.get("bops"),
        costs={"latency": limits["latency"]} if "latency" in limits else {},
    )


def _solve(problem: Problem, budget: Budget, ties=()) -> Plan:
    return solve_ilp(
        problem.table,
        budget,
        cost_tables=[problem.latency],
        act_bits=problem.act_bits,
        ties=ties,
    )


def _plan_totals(problem: Problem, plan: Plan) -> tuple[float, dict[str, float]]:
    omega, quantities = 0.0, {"weight_bits": 0.0, "bops": 0.0, "latency": 0.0}
    for name, layer in problem.table.layers.items():
        index = layer.labels.index(str(plan.layers[name].ratio))
        omega += layer.omegas()[index]
        quantities["weight_bits"] += layer.weight_bits()[index]
        quantities["bops"] += layer.bops(problem.act_bits[name])[index]
        quantities["latency"] += problem.latency.cost(name, layer.labels[index])
    quantities["eq_bits"] = quantities["weight_bits"] / problem.table.total_weights
    return omega, quantities


@pytest.mark.parametrize("seed", range(40))
def test_ilp_matches_brute_force_under_size_bops_and_latency(seed: int) -> None:
    rng = np.random.default_rng(seed)
    problem = random_problem(
        rng, layers=int(rng.integers(1, 7)), candidates=int(rng.integers(2, 5))
    )
    totals = enumerate_plans(problem)
    size = "eq_bits" if seed % 2 else "weight_bits"
    limits = _limits_between(rng, totals, (size, "bops", "latency"))
    best = best_feasible(totals, limits)
    if best is None:
        with pytest.raises(InfeasibleBudgetError):
            _solve(problem, _budget(limits))
        return
    plan = _solve(problem, _budget(limits))
    omega, used = _plan_totals(problem, plan)
    assert omega == pytest.approx(best, abs=1e-9)
    assert plan.metadata["objective"] == pytest.approx(best, abs=1e-9)
    for name, limit in limits.items():
        assert used[name] <= limit * (1 + 1e-12)
        assert plan.metadata["used"][name] == pytest.approx(used[name])


@pytest.mark.parametrize("seed", range(10))
def test_tied_layers_take_one_candidate_and_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    problem = random_problem(rng, layers=5, candidates=3)
    # Tied layers must offer the same candidates: give layer3 layer1's, in another order.
    table = dict(problem.table.layers)
    donor = table["layer1"]
    table["layer3"] = LayerOptions(
        table["layer3"].shape,
        tuple(CandidateOption(o.ratio, float(rng.normal())) for o in reversed(donor.options)),
    )
    latency = dict(problem.latency.values)
    latency["layer3"] = {label: float(rng.uniform(0.1, 2)) for label in donor.labels}
    problem = Problem(PerturbationTable(table), CostTable("latency", latency), problem.act_bits)
    ties = [["layer1", "layer3"]]
    totals = enumerate_plans(problem, ties)
    limits = _limits_between(rng, totals, ("weight_bits", "latency"))
    best = best_feasible(totals, limits)
    if best is None:
        with pytest.raises(InfeasibleBudgetError):
            _solve(problem, _budget(limits), ties=ties)
        return
    plan = _solve(problem, _budget(limits), ties=ties)
    assert plan.layers["layer1"].ratio == plan.layers["layer3"].ratio
    assert _plan_totals(problem, plan)[0] == pytest.approx(best, abs=1e-9)
    assert plan.metadata["ties"] == [["layer1", "layer3"]]


def _two_layer_table(omega_low: float = 1.0) -> PerturbationTable:
    layers = {}
    for name, rows in (("a", 4), ("b", 8)):
        shape = LayerShape(name, "linear", rows, 10, 1, 10, rows)
        layers[name] = LayerOptions(
            shape,
            (
                CandidateOption(Ratio.parse("fixed-4"), omega_low),
                CandidateOption(Ratio.parse("fixed-8"), 0.0),
            ),
        )
    return PerturbationTable(layers)


def test_tied_layers_with_different_candidates_are_rejected() -> None:
    table = dict(_two_layer_table().layers)
    table["b"] = LayerOptions(table["b"].shape, (CandidateOption(Ratio.parse("fixed-8"), 0.0),))
    with pytest.raises(AllocationError, match="different candidates"):
        solve_ilp(PerturbationTable(table), Budget(), ties=[["a", "b"]])


def test_ties_overlapping_merge_and_unknown_names_are_rejected() -> None:
    table = _two_layer_table()
    with pytest.raises(AllocationError, match=r"\['c'\]"):
        solve_ilp(table, Budget(), ties=[["a", "c"]])
    plan = solve_ilp(table, Budget(eq_bits=6.0), ties=[["a", "b"], ["b", "a"]])
    assert plan.metadata["groups"] == 1
    assert plan.layers["a"].ratio == plan.layers["b"].ratio == Ratio.parse("fixed-4")


def test_budget_below_the_smallest_plan_says_the_smallest_that_fits() -> None:
    table = _two_layer_table()  # 120 weights: 480 bits at fixed-4 at least
    with pytest.raises(InfeasibleBudgetError, match=r"weight_bits 400 < 480") as caught:
        solve_ilp(table, Budget(weight_bits=400, bops=1e9))
    assert caught.value.minimums["weight_bits"] == 480
    assert caught.value.minimums["bops"] == 480 * 8
    with pytest.raises(InfeasibleBudgetError, match=r"eq_bits=4\b"):
        solve_ilp(table, Budget(eq_bits=3.5))
    # Exactly the smallest budget fits.
    plan = solve_ilp(table, Budget(weight_bits=480))
    assert plan.metadata["used"]["weight_bits"] == 480


def test_limits_that_conflict_name_each_limit_alone() -> None:
    table = _two_layer_table()
    # fixed-4 is slow, fixed-8 big: each limit alone fits, together nothing does.
    latency = CostTable("latency", {n: {"fixed-4": 5.0, "fixed-8": 1.0} for n in ("a", "b")})
    budget = Budget(eq_bits=4.0, costs={"latency": 2.0})
    with pytest.raises(InfeasibleBudgetError, match="together") as caught:
        solve_ilp(table, budget, cost_tables=[latency])
    assert caught.value.minimums == {"eq_bits": 4.0, "latency": 2.0}


def test_a_limit_without_its_cost_table_or_cost_entry_is_an_error() -> None:
    table = _two_layer_table()
    with pytest.raises(AllocationError, match="no cost table"):
        solve_ilp(table, Budget(costs={"lut": 10.0}))
    partial = CostTable("lut", {"a": {"fixed-4": 1.0, "fixed-8": 1.0}})
    with pytest.raises(AllocationError, match="no entry for layer 'b'"):
        solve_ilp(table, Budget(costs={"lut": 10.0}), cost_tables=[partial])


def test_plan_fixes_activation_bits_and_round_trips_through_json(tmp_path) -> None:
    table = _two_layer_table()
    plan = solve_ilp(table, Budget(eq_bits=6.0), act_bits={"a": 8, "b": 4}, method="joint-ilp")
    assert {n: lp.act_bits for n, lp in plan.layers.items()} == {"a": 8, "b": 4}
    assert plan.method == "joint-ilp"
    assert plan.metadata["budgets"] == {"eq_bits": 6.0}
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == plan
    with pytest.raises(AllocationError, match="act_bits"):
        solve_ilp(table, Budget(), act_bits=20)


def test_the_least_perturbation_wins_without_limits() -> None:
    plan = solve_ilp(_two_layer_table(omega_low=1.0), Budget())
    assert {str(lp.ratio) for lp in plan.layers.values()} == {"fixed-8:1"}
    plan = solve_ilp(_two_layer_table(omega_low=-1.0), Budget())
    assert {str(lp.ratio) for lp in plan.layers.values()} == {"fixed-4:1"}
