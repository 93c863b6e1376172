"""Seeded, resumable benchmark runs (no torch; the units themselves are in ``_unit_store``):
mean and standard error over seeds, the ranking check between epochs, the Pareto front and
a wall-clock budget that ends a chunk of work between units.

>>> mean_se([0.80, 0.82, 0.84])
(0.82, 0.011547)
>>> pareto_front([(1.0, 0.9), (2.0, 0.8), (1.5, 0.7)], maximise_x=True)
[0, 1]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mixq.errors import MixqError


class BenchmarkSettingsError(MixqError, ValueError):
    """A benchmark driver was given settings it cannot run with (named in the message)."""


def mean_se(values: Sequence[float], digits: int = 6) -> tuple[float, float | None]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n)); the
    error is ``None`` for a single value, where it is not defined."""
    if not values:
        raise BenchmarkSettingsError("no values to average")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return round(mean, digits), None
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return round(mean, digits), round(math.sqrt(variance / n), digits)


# Options that say which units to run and where, never what a unit computes: no unit's
# key holds them (those of add_chunk_options and add_run_options among them).
NOT_IN_UNIT_KEY = frozenset({"methods", "eq_bits", "seeds", "threads", "data_root", "output"})
NOT_IN_UNIT_KEY |= {"work_dir", "budget_minutes", "name", "report_only", "carry_from"}


def unit_key(
    benchmark: str,
    args: argparse.Namespace,
    unit: tuple[str, int, int],
    unused: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Any]:
    """The settings one unit (method, eq_bits, seed) of ``benchmark`` depends on: every
    option but those of :data:`NOT_IN_UNIT_KEY` and ``unused``.

    >>> args = argparse.Namespace(seeds=[0, 1, 2], lr=0.1, budget_minutes=9)
    >>> unit_key("b", args, ("msp", 4, 0))
    {'benchmark': 'b', 'method': 'msp', 'eq_bits': 4, 'seed': 0, 'lr': 0.1}
    """
    method, eq_bits, seed = unit
    skipped = NOT_IN_UNIT_KEY | unused
    shared = {k: v for k, v in vars(args).items() if k not in skipped}
    return {"benchmark": benchmark, "method": method, "eq_bits": eq_bits, "seed": seed, **shared}


def add_chunk_options(parser: argparse.ArgumentParser, work_dir: Path, name: str) -> None:
    """The options of a driver that runs in resumable chunks: its work dir, the chunk's
    budget, the result's name, a report from finished units alone, and earlier result
    files to carry rows from."""
    parser.add_argument("--work-dir", type=Path, default=work_dir)
    parser.add_argument(
        "--budget-minutes", type=float, default=None, help="stop after the unit that passes it"
    )
    parser.add_argument("--name", default=name, help="result file name (smoke runs: another)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the result from the finished units alone; start no unit",
    )
    parser.add_argument(
        "--carry-from",
        nargs="+",
        type=Path,
        default=[],
        help="earlier result files (a chunk run on another checkout) whose rows fill the "
        "(method, level) pairs that have no finished unit here, after the replaced file",
    )


class WallBudget:
    """Minutes of wall time for one chunk of work; ``None`` is no limit. Drivers ask
    :meth:`spent` between units, so a unit is never cut in the middle by the budget."""

    def __init__(self, minutes: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if minutes is not None and not (math.isfinite(minutes) and minutes > 0):
            raise BenchmarkSettingsError(f"--budget-minutes must be > 0, got {minutes}")
        self.minutes = minutes
        self._clock = clock
        self._start = clock()

    def elapsed_minutes(self) -> float:
        return (self._clock() - self._start) / 60.0

    def spent(self) -> bool:
        return self.minutes is not None and self.elapsed_minutes() >= self.minutes


def units_left_line(left: int, report_only: bool) -> str:
    """What a chunk prints when ``left`` of its units did not run: in a report-only run
    they are in neither the store nor the ledger, otherwise the budget was spent.

    >>> units_left_line(2, report_only=True)[:43]
    '2 units in neither the store nor the ledger'
    >>> units_left_line(3, report_only=False)[:47]
    '3 units left (rerun the same command to resume)'
    """
    reason = "in neither the store nor the ledger" if report_only else "left"
    if not report_only:
        reason += " (rerun the same command to resume)"
    return f"{left} units {reason}; their rows are carried where an earlier file has them"


def rows_complete(
    rows: Sequence[Mapping[str, Any]], expected: set[tuple[str, int]], seed_count: int
) -> bool:
    """Whether every expected (method, level) has a row with all ``seed_count`` seeds,
    measured in this run or carried from an earlier file.

    >>> rows = [{"method": "msp", "eq_bits_target": 4, "seeds": [0, 1, 2]}]
    >>> rows_complete(rows, {("msp", 4)}, 3), rows_complete(rows, {("msp", 4), ("msp", 3)}, 3)
    (True, False)
    """
    whole = {(r["method"], r["eq_bits_target"]) for r in rows if len(r["seeds"]) == seed_count}
    return expected <= whole


def ranking(means: Mapping[str, float]) -> list[str]:
    """Names from best to worst mean (ties broken by name, so the order is stable).

    >>> ranking({"a": 0.8, "b": 0.9, "c": 0.8})
    ['b', 'a', 'c']
    """
    return sorted(means, key=lambda name: (-means[name], name))


def convergence_by_level(
    rows: Sequence[Mapping[str, Any]], levels: Sequence[int], seed_count: int, metric: str
) -> dict[str, Any]:
    """:func:`ranking_change` at each level (``"w4"``: ...) over the rows that have all
    ``seed_count`` seeds, from their ``<metric>_per_epoch`` means and ``<metric>_se``."""
    convergence = {}
    for eq_bits in levels:
        whole = [
            r for r in rows if r["eq_bits_target"] == eq_bits and len(r["seeds"]) == seed_count
        ]
        series = {r["method"]: r[f"{metric}_per_epoch"] for r in whole}
        last_se = {r["method"]: r[f"{metric}_se"] for r in whole}
        convergence[f"w{eq_bits}"] = ranking_change(series, last_se)
    return convergence


def ranking_change(
    per_epoch_means: Mapping[str, Sequence[float]],
    last_se: Mapping[str, float | None] | None = None,
) -> dict[str, Any]:
    """Whether the ranking of methods by mean accuracy differs between the last two epochs,
    and, given each method's standard error after the last epoch (``last_se``), whether any
    pair that the last epoch separates beyond noise was in the other order before.

    ``per_epoch_means[method]`` is the method's mean over seeds after each epoch; methods
    with fewer than two epochs make the check undecided (``changed`` is ``None``). A pair
    is *resolved* when its gap exceeds twice the standard error of the difference
    (``sqrt(se_a^2 + se_b^2)``); swaps among unresolved pairs are noise, so the budget has
    converged for the comparison when no resolved pair flipped (``resolved_flipped`` empty).

    >>> ranking_change({"a": [0.70, 0.80], "b": [0.75, 0.78]})["changed"]
    True
    >>> ranking_change({"a": [0.70, 0.80], "b": [0.65, 0.78]})["changed"]
    False
    >>> check = ranking_change({"a": [0.70, 0.80], "b": [0.75, 0.78], "c": [0.79, 0.795]},
    ...                        {"a": 0.002, "b": 0.002, "c": 0.004})
    >>> check["resolved_pairs"], check["resolved_flipped"]
    ([['a', 'b'], ['c', 'b']], [['a', 'b']])
    """
    epochs = {len(v) for v in per_epoch_means.values()}
    if len(per_epoch_means) < 2 or min(epochs) < 2 or len(epochs) != 1:
        return {
            "changed": None,
            "reason": "needs >= 2 methods, each with all seeds and the same >= 2 epochs",
        }
    last = ranking({m: v[-1] for m, v in per_epoch_means.items()})
    before = ranking({m: v[-2] for m, v in per_epoch_means.items()})
    result: dict[str, Any] = {"changed": last != before, "last_epoch": last, "epoch_before": before}
    if last_se is not None and all(last_se.get(m) is not None for m in per_epoch_means):
        resolved = [
            [a, b]
            for i, a in enumerate(last)
            for b in last[i + 1 :]
            if per_epoch_means[a][-1] - per_epoch_means[b][-1]
            > 2 * math.hypot(float(last_se[a] or 0.0), float(last_se[b] or 0.0))
        ]
        flipped = [[a, b] for a, b in resolved if per_epoch_means[a][-2] < per_epoch_means[b][-2]]
        result |= {"resolved_pairs": resolved, "resolved_flipped": flipped}
    return result


def pareto_front(points: Sequence[tuple[float, float]], *, maximise_x: bool) -> list[int]:
    """Indices of the points no other point dominates, where ``y`` (accuracy) is maximised
    and ``x`` is maximised (throughput) or minimised (size). A point equal to another in
    both coordinates is on the front with it.

    >>> pareto_front([(100.0, 0.9), (120.0, 0.8), (90.0, 0.85)], maximise_x=False)
    [0, 2]
    """
    sign = 1.0 if maximise_x else -1.0

    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        ax, bx = sign * a[0], sign * b[0]
        return ax >= bx and a[1] >= b[1] and (ax > bx or a[1] > b[1])

    return [
        i
        for i, point in enumerate(points)
        if not any(dominates(other, point) for j, other in enumerate(points) if j != i)
    ]


def aggregate(
    units: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    group_by: Sequence[str] = ("method", "eq_bits_target"),
    mean_fields: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per group of finished units (in first-seen order): the seeds, ``metric``'s
    mean, standard error and per-seed values, and the mean of each of ``mean_fields``
    (numbers, or dicts of numbers averaged per key, such as images/s per device).

    >>> units = [{"method": "a", "eq_bits_target": 4, "seed": s, "top1": v}
    ...          for s, v in [(0, 0.80), (1, 0.82), (2, 0.84)]]
    >>> row = aggregate(units, "top1")[0]
    >>> row["seeds"], row["top1_mean"], row["top1_se"], row["top1_per_seed"]
    ([0, 1, 2], 0.82, 0.011547, [0.8, 0.82, 0.84])
    """
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for unit in units:
        groups.setdefault(tuple(unit[k] for k in group_by), []).append(unit)
    rows = []
    for key, members in groups.items():
        members = sorted(members, key=lambda u: u["seed"])
        values = [float(u[metric]) for u in members]
        mean, se = mean_se(values)
        row: dict[str, Any] = dict(zip(group_by, key, strict=True))
        row["seeds"] = [u["seed"] for u in members]
        row[f"{metric}_mean"] = mean
        row[f"{metric}_se"] = se
        row[f"{metric}_per_seed"] = values
        for field in mean_fields:
            row[field] = _mean_field([u[field] for u in members if u.get(field) is not None])
        rows.append(row)
    return rows


def _mean_field(values: Sequence[Any]) -> Any:
    if not values:
        return None
    if isinstance(values[0], Mapping):
        return {k: round(sum(v[k] for v in values) / len(values), 4) for k in values[0]}
    if isinstance(values[0], list | tuple):  # per-epoch series: mean at each position
        length = min(len(v) for v in values)
        return [round(sum(v[i] for v in values) / len(values), 6) for i in range(length)]
    return round(sum(float(v) for v in values) / len(values), 4)


def run_units(
    pending: Sequence[Any], budget: WallBudget, run_one: Callable[[Any], dict[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """``run_one`` on each of ``pending`` in order until ``budget`` is spent (checked
    before each unit, so the unit running when it runs out finishes); the rows and how
    many units are left.

    >>> ticks = iter([0.0, 0.0, 30.0, 90.0])  # start, then before each unit
    >>> rows, left = run_units([1, 2, 3], WallBudget(1.0, lambda: next(ticks)), lambda u: {"u": u})
    >>> rows, left
    ([{'u': 1}, {'u': 2}], 1)
    """
    rows: list[dict[str, Any]] = []
    for done, unit in enumerate(pending):
        if budget.spent():
            return rows, len(pending) - done
        rows.append(run_one(unit))
    return rows, 0


def check_seeded_run(args: argparse.Namespace, positive: Sequence[str], results_dir: Path) -> None:
    """The checks every multi-seed driver makes before any work: distinct non-negative
    seeds, the named counts at least 1, and three seeds or more for a committed result."""
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        raise BenchmarkSettingsError(f"--seeds must be distinct and >= 0, got {args.seeds}")
    for name in positive:
        if getattr(args, name) < 1:
            raise BenchmarkSettingsError(f"--{name.replace('_', '-')} must be >= 1")
    if args.output.resolve() == results_dir.resolve() and len(args.seeds) < 3:
        raise BenchmarkSettingsError(
            "results in benchmarks/results need >= 3 seeds; write smoke runs elsewhere (--output)"
        )
