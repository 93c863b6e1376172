"""Cost of Hessian sensitivity and of the allocation ILP.

Hutchinson traces of the pretrained ResNet-20 (BN folded) until every layer's relative
standard error is at most the tolerance (or a layer reaches the probe cap), in three
settings: per-layer probes on one fixed batch of training images (the trace of that batch's
Hessian, as HAWQ and PyHessian measure it), whole-model probes on the same batch, and
per-layer probes over random batches of the whole training set (the trace of the expected
Hessian; mini-batch noise adds to probe noise). Trace timings are single runs (each takes
minutes); the machine's load average is recorded beside them. Then the joint ILP (6
candidates per layer, limits on mean weight bits, BOPs and latency) on ResNet-20 and on a
randomly initialised ResNet-56, timed over several solves.

    python benchmarks/sensitivity_cost.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _common import add_run_options, start_run, write_result
from torch import nn

from mixq.allocation.budget import Budget
from mixq.allocation.costs import CostTable
from mixq.allocation.ilp import solve_ilp
from mixq.allocation.options import PerturbationTable
from mixq.data import cifar10_loader
from mixq.models import load_pretrained_cifar_resnet, resnet20, resnet56
from mixq.sensitivity import (
    JOINT_CANDIDATES,
    HutchinsonConfig,
    SensitivityTable,
    hutchinson_traces,
    perturbation_table,
)

NAME = "sensitivity_cost"
# Latency of the ILP's third limit: a stand-in lookup table (MACs x the candidate's largest
# bit width x 1 ns), not a measurement; the solve time depends on the table's size only.
PROXY_SECONDS_PER_MAC_BIT = 1e-9


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--max-probes", type=int, default=64, help="cap per layer, fixed batch")
    parser.add_argument(
        "--model-max-probes", type=int, default=200, help="cap of whole-model probes"
    )
    parser.add_argument(
        "--loader-max-probes", type=int, default=32, help="cap per layer, random batches"
    )
    parser.add_argument("--ilp-runs", type=int, default=20)
    parser.add_argument(
        "--probes-per-product", type=int, default=8, help="probes vectorised in one product"
    )
    parser.add_argument(
        "--hvp-timing",
        action="store_true",
        help="only time single against vectorised products (per probe), interleaved",
    )
    parser.add_argument(
        "--only-fixed-layer", action="store_true", help="only per-layer probes, fixed batch"
    )
    add_run_options(parser, threads=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    root = start_run(args)
    weights = root / "resnet-cifar10" / "resnet20-12fca82f.th"
    model = load_pretrained_cifar_resnet(resnet20(), weights)
    images = root / "cifar10-jpeg"
    fixed = list(cifar10_loader(images, "train", args.batch_size, limit=args.batch_size))
    shuffled = cifar10_loader(images, "train", args.batch_size, shuffle=True, seed=1)
    settings = {
        "model": "resnet20 (pretrained, BN folded)",
        "batch_size": args.batch_size,
        "tolerance": args.tolerance,
        "stop_on": "stderr",
        "min_probes": 8,
        "max_probes_fixed_batch": args.max_probes,
        "max_probes_whole_model": args.model_max_probes,
        "max_probes_random_batches": args.loader_max_probes,
        "hvp_mode": "forward-over-reverse",
        "probes_per_product": args.probes_per_product,
        "trace_runs": 1,
        "ilp_runs": args.ilp_runs,
        "ilp_candidates": list(JOINT_CANDIDATES),
        "ilp_limits": ["eq_bits", "bops", "latency"],
        "latency_table": "proxy: MACs x largest bits x 1 ns (not measured)",
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    rows: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        print(_format(row), flush=True)
        write_result(NAME, settings, rows, args.output)

    runs = [
        ("hutchinson-layer", "fixed batch", fixed, "layer", args.max_probes),
        ("hutchinson-model", "fixed batch", fixed, "model", args.model_max_probes),
        ("hutchinson-layer", "random batches", shuffled, "layer", args.loader_max_probes),
    ]
    if args.hvp_timing:
        record(_hvp_timing(model, fixed[0], args.probes_per_product))
        return
    if args.only_fixed_layer:
        runs = runs[:1]
    # Warm-up: the first torch.func products pay one-off costs that are not the method's.
    hutchinson_traces(model, fixed, HutchinsonConfig(min_probes=2, max_probes=2), layers=["linear"])
    tables = {}
    for index, (method, data_name, data, scope, cap) in enumerate(runs):
        config = HutchinsonConfig(
            tolerance=args.tolerance,
            min_probes=min(8, cap),
            max_probes=cap,
            probe_scope=scope,
            probes_per_product=args.probes_per_product,
        )
        load_before = os.getloadavg()[0]
        table = hutchinson_traces(
            model, data, config, model_name="resnet20", weights_path=str(weights)
        )
        tables[(scope, data_name)] = table
        load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        record({**_trace_row(method, data_name, table), "load_average_before_after": load})
        if index == 0 and not args.only_fixed_layer:
            _ilp_rows(model, table, fixed, args.ilp_runs, record)
    settings["load_average_at_end"] = round(os.getloadavg()[0], 2)
    path = write_result(NAME, settings, rows, args.output)
    _plot(tables, path.with_suffix(".png"))
    print(f"wrote {path}")


def _hvp_timing(model: nn.Module, batch: Any, probes: int, repeats: int = 1) -> dict[str, Any]:
    """Seconds per probe of one product at a time against ``probes`` vectorised, on the
    first, a middle and the last layer (the same batch; interleaved, so both see the same
    load)."""
    import torch.nn.functional as F

    from mixq.sensitivity.folded import folded_float_copy
    from mixq.sensitivity.hvp import make_batched_hvp, make_hvp

    target = folded_float_copy(model, fold_bn=True).requires_grad_(False)
    single, batched = make_hvp(target, F.cross_entropy), make_batched_hvp(target, F.cross_entropy)
    inputs, targets = batch
    params = dict(target.named_parameters())
    every = [n for n, p in params.items() if n.endswith("weight") and p.dim() > 1]
    keys = [every[0], every[len(every) // 2], every[-1]]
    one_s = many_s = 0.0
    load_before = os.getloadavg()[0]
    for _ in range(repeats):
        for key in keys:
            w = {key: params[key].detach()}
            vs = {key: torch.randint(0, 2, (probes, *w[key].shape)).float() * 2 - 1}
            start = time.perf_counter()
            for k in range(probes):
                single(w, {key: vs[key][k]}, inputs, targets)
            one_s += time.perf_counter() - start
            start = time.perf_counter()
            batched(w, vs, inputs, targets, True)
            many_s += time.perf_counter() - start
    products = repeats * len(keys) * probes
    return {
        "method": "hvp-timing",
        "model": "resnet20",
        "data": "fixed batch",
        "trace_s": None,
        "probes_per_product": probes,
        "layers": keys,
        "products_each": products,
        "s_per_probe_single": round(one_s / products, 4),
        "s_per_probe_vectorised": round(many_s / products, 4),
        "speedup": round(one_s / many_s, 2),
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def _ilp_rows(model: nn.Module, table: SensitivityTable, batch: list, runs: int, record) -> None:
    record(_ilp_row("resnet20", model, table, runs))
    # ResNet-56 at random initialisation: its traces (a few whole-model probes) only give
    # the ILP realistic perturbations to weigh; the solve time is the figure.
    torch.manual_seed(0)
    big = resnet56().eval()
    big_table = hutchinson_traces(
        big,
        batch,
        HutchinsonConfig(min_probes=2, max_probes=2, probe_scope="model"),
        model_name="resnet56 (random init)",
    )
    record(_ilp_row("resnet56", big, big_table, runs))


def _trace_row(method: str, data_name: str, table: SensitivityTable) -> dict[str, Any]:
    run = table.run
    converged = [n for n, layer in table.layers.items() if layer.rel_stderr <= run.config.tolerance]
    return {
        "method": method,
        "model": "resnet20",
        "data": data_name,
        "hvp_count": run.hvp_count,
        "trace_s": round(run.seconds, 1),
        "ilp_solve_s": None,
        "s_per_hvp": round(run.seconds / run.hvp_count, 3),
        "layers": len(table.layers),
        "layers_within_tolerance": len(converged),
        "max_rel_stderr": round(run.max_rel_stderr, 4),
        "per_layer": [
            {
                "layer": name,
                "probes": layer.probes,
                "trace": layer.trace,
                "rel_stderr": round(layer.rel_stderr, 4),
            }
            for name, layer in table.layers.items()
        ],
    }


def _ilp_row(model_name: str, model: nn.Module, table: SensitivityTable, runs: int) -> dict:
    start = time.perf_counter()
    options = perturbation_table(model, table, JOINT_CANDIDATES, granularity="row")
    perturbation_s = time.perf_counter() - start
    latency = _proxy_latency(options)
    budget = _budget(options, latency)
    seconds = []
    for _ in range(runs):
        plan = solve_ilp(options, budget, cost_tables=[latency], method="joint-ilp")
        seconds.append(plan.metadata["solve_s"])
    return {
        "method": "joint-ilp",
        "model": model_name,
        "hvp_count": None,
        "trace_s": None,
        "ilp_solve_s": round(statistics.median(seconds), 4),
        "ilp_solve_max_s": round(max(seconds), 4),
        "perturbation_s": round(perturbation_s, 2),
        "layers": len(options.layers),
        "candidates_per_layer": len(JOINT_CANDIDATES),
        "variables": plan.metadata["variables"],
        "budgets": plan.metadata["budgets"],
        "used": plan.metadata["used"],
        "status": plan.metadata["status"],
    }


def _proxy_latency(options: PerturbationTable) -> CostTable:
    values = {
        name: {
            o.label: layer.shape.macs
            * max(c.bits for c in o.ratio.candidates)
            * PROXY_SECONDS_PER_MAC_BIT
            for o in layer.options
        }
        for name, layer in options.layers.items()
    }
    return CostTable("latency", values, unit="s (proxy)")


def _budget(options: PerturbationTable, latency: CostTable) -> Budget:
    """Limits between each quantity's smallest and largest total, so all three bind."""
    bops = [layer.bops(8) for layer in options.layers.values()]
    lat = [
        [latency.cost(name, label) for label in layer.labels]
        for name, layer in options.layers.items()
    ]
    low_bops, high_bops = sum(b.min() for b in bops), sum(b.max() for b in bops)
    low_lat, high_lat = sum(min(x) for x in lat), sum(max(x) for x in lat)
    return Budget(
        eq_bits=4.2,
        bops=float(low_bops + 0.15 * (high_bops - low_bops)),
        costs={"latency": float(low_lat + 0.2 * (high_lat - low_lat))},
    )


def _format(row: dict[str, Any]) -> str:
    if row["method"] == "hvp-timing":
        return str(row)
    if row["trace_s"] is not None:
        return (
            f"{row['method']:<18} {row['data']:<15} hvp {row['hvp_count']:>5}  "
            f"{row['trace_s']:>8.1f} s  within tolerance {row['layers_within_tolerance']}/"
            f"{row['layers']}  worst rel. s.e. {row['max_rel_stderr']:.3f}"
        )
    return (
        f"{row['method']:<18} {row['model']:<15} {row['variables']} variables  "
        f"solve {row['ilp_solve_s'] * 1000:.1f} ms (median of runs)"
    )


def _plot(tables: dict[tuple[str, str], SensitivityTable], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for offset, ((scope, data_name), table) in enumerate(tables.items()):
        names = list(table.layers)
        xs = [i + (offset - 1) * 0.25 for i in range(len(names))]
        means = [table.layers[n].mean_trace for n in names]
        errors = [table.layers[n].trace_stderr / table.layers[n].shape.weights for n in names]
        label = f"{scope} probes, {data_name}"
        top.errorbar(xs, means, yerr=errors, fmt="o", ms=3, capsize=2, label=label)
        bottom.bar(xs, [table.layers[n].probes for n in names], width=0.25, label=label)
    top.set_yscale("symlog", linthresh=1e-3)
    top.set_ylabel("trace / n (± s.e.)")
    top.legend(fontsize=8)
    bottom.set_ylabel("probes")
    bottom.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    fig.suptitle("ResNet-20 Hessian traces per layer (BN folded), Hutchinson")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
