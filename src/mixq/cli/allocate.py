"""``mixq allocate``: a sensitivity table and budgets in, a plan out (HAWQ-V3 or joint ILP).

    mixq allocate --table out/sensitivity.json --method hawq-v3-ilp --budget eq-bits=4.5
    mixq allocate --table t.json --method joint-ilp --budget eq-bits=4.2 --budget bops=1.2e9 \\
        --budget lut=20000 --cost-table lut.json --override conv1=fixed-8 --override linear=fixed-8

Budgets are ``eq-bits`` (mean weight bits), ``weight-bits`` (total), ``bops`` (MACs x w-bits
x a-bits per sample), ``fpga-images-per-s=DEVICE:N`` (at least N images/s at batch 1 as
mixq's FPGA cost model has it on DEVICE, on an accelerator built for the candidates:
docs/hardware.md) or the name of a ``--cost-table`` (latency, LUT, DSP, ...: a JSON cost
table, summed over layers). ``hawq-v3-ilp`` offers every layer one scheme-and-bits
(default fixed-4 or fixed-8) with HAWQ's ``Omega = trace/n * ||Q(W) - W||^2``; ``joint-ilp``
offers ratios of schemes and precisions (default six, from all-Fixed-8 to RMSMP's mixes)
costed row by row. At least one ``--budget`` is required (without one every layer would
simply take its most precise option). The model and weights default to those the table was
measured on. Writes ``<output>/plan.json`` (default ``mixq-plan/``; for ``mixq quantize
--plan``) and prints the plan per layer.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from mixq.allocation.budget import Budget
from mixq.allocation.costs import CostTable
from mixq.allocation.fpga_budget import FpgaThroughput
from mixq.allocation.ilp import METHODS, solve_ilp
from mixq.allocation.options import PerturbationTable
from mixq.cli._common import (
    act_bits_type,
    add_command,
    add_model_option,
    load_model,
    require_text_file,
)
from mixq.errors import AllocationError
from mixq.plan import Plan
from mixq.sensitivity import (
    HAWQ_CANDIDATES,
    JOINT_CANDIDATES,
    SensitivityTable,
    perturbation_table,
)

log = logging.getLogger("mixq")

PLAN_NAME = "plan.json"
_BUILTIN_LIMITS = {"eq-bits": "eq_bits", "weight-bits": "weight_bits", "bops": "bops"}
FPGA_BUDGET = "fpga-images-per-s"  # DEVICE:IMAGES_PER_S, modelled at batch 1

SUMMARY = (  # the line in `mixq --help`
    "choose each layer's precision (and scheme mix) under budgets; write plan.json"
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_command(subparsers, common, "allocate", __doc__, help=SUMMARY)
    parser.add_argument("--table", type=Path, required=True, help="a sensitivity table (JSON)")
    parser.add_argument("--method", choices=METHODS, default="hawq-v3-ilp")
    parser.add_argument(
        "--budget",
        action="append",
        required=True,
        metavar="NAME=LIMIT",
        help="required: eq-bits, weight-bits, bops, fpga-images-per-s=DEVICE:N, or a cost "
        "table's name; repeat for several",
    )
    parser.add_argument(
        "--cost-table", action="append", type=Path, default=[], help="a cost table (JSON)"
    )
    parser.add_argument(
        "--candidates", nargs="+", default=None, help="candidates of every layer (ratios)"
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="LAYER=CAND[|CAND...]",
        help="other candidates for one layer, e.g. conv1=fixed-8",
    )
    parser.add_argument(
        "--tie", action="append", default=[], metavar="A,B", help="layers that take one choice"
    )
    parser.add_argument(
        "--act-bits", type=act_bits_type, default=8, help="activation bits, in the BOPs"
    )
    parser.add_argument("--scale-method", choices=["max", "mse"], default="max")
    add_model_option(parser, required=False)
    parser.add_argument("--weights", type=Path, help="default: the weights the table records")
    parser.set_defaults(handler=run, outputs=planned_outputs, output="mixq-plan")


def planned_outputs(args: argparse.Namespace) -> list[Path]:
    return [Path(args.output) / PLAN_NAME]


def run(args: argparse.Namespace) -> int:
    budget = parse_budget(args.budget)
    table = SensitivityTable.load(require_text_file(args.table, "sensitivity table"))
    cost_tables = [
        CostTable.load(require_text_file(path, "cost table")) for path in args.cost_table
    ]
    model_name = args.model or table.run.model or None
    weights = args.weights or (Path(table.run.weights) if table.run.weights else None)
    if weights is None:
        raise AllocationError("the table records no weights file: pass --weights")
    model = load_model(weights, model_name, args.torch_device).model
    row_wise = args.method == "joint-ilp"
    default = HAWQ_CANDIDATES if not row_wise else JOINT_CANDIDATES
    options = perturbation_table(
        model,
        table,
        args.candidates or default,
        overrides=parse_overrides(args.override),
        granularity="row" if row_wise else "layer",
        scale_method=args.scale_method,
        fold_bn=table.run.config.fold_bn,
    )
    plan = solve_ilp(
        options,
        budget,
        cost_tables=cost_tables,
        ties=[tie.split(",") for tie in args.tie],
        act_bits=args.act_bits,
        method=args.method,
    )
    path = Path(args.output) / PLAN_NAME
    plan.save(path)
    print("\n".join(format_plan(plan, options)))
    log.info("wrote %s", path)
    return 0


def parse_budget(items: list[str]) -> Budget:
    """``["eq-bits=4.2", "latency=0.01", "fpga-images-per-s=xc7z045:5000"]`` -> a
    :class:`Budget`."""
    fixed: dict[str, float] = {}
    costs: dict[str, float] = {}
    fpga = None
    for item in items:
        name, sep, value = item.partition("=")
        if name.replace("_", "-") == FPGA_BUDGET:
            fpga = FpgaThroughput.parse(value)
            continue
        try:
            limit = float(value)
        except ValueError:
            raise AllocationError(f"budget {item!r}: write NAME=NUMBER") from None
        if not sep or not name:
            raise AllocationError(f"budget {item!r}: write NAME=NUMBER")
        if not math.isfinite(limit) or limit <= 0:
            raise AllocationError(f"budget {item!r}: the limit must be a finite number > 0")
        key = _BUILTIN_LIMITS.get(name.replace("_", "-"))
        (fixed if key else costs)[key or name] = limit
    return Budget(**fixed, costs=costs, fpga=fpga)


def parse_overrides(items: list[str]) -> dict[str, list[str]]:
    """``["conv1=fixed-8|fixed-4"]`` -> ``{"conv1": ["fixed-8", "fixed-4"]}``."""
    overrides = {}
    for item in items:
        layer, sep, candidates = item.partition("=")
        if not sep or not layer or not candidates:
            raise AllocationError(f"override {item!r}: write LAYER=CANDIDATE[|CANDIDATE...]")
        overrides[layer] = candidates.split("|")
    return overrides


def format_plan(plan: Plan, options: PerturbationTable) -> list[str]:
    """One line per layer (weights, choice, mean bits, Omega), then the totals."""
    lines = [f"{'layer':<24} {'weights':>8} {'bits':>5} {'omega':>11}  choice"]
    for name, layer in plan.layers.items():
        layer_options = options.layers[name]
        option = layer_options.options[layer_options.labels.index(str(layer.ratio))]
        bits = option.bits_per_row(layer_options.shape.rows).mean()
        lines.append(
            f"{name:<24} {layer_options.shape.weights:>8} {bits:>5.2f} {option.omega:>11.4g}  "
            f"{layer.ratio}"
        )
    meta = plan.metadata
    used = ", ".join(f"{k} {v:.6g}" for k, v in meta["used"].items())
    lines.append(
        f"{plan.method}: objective {meta['objective']:.6g}; {used}; "
        f"solved in {meta['solve_s'] * 1000:.1f} ms"
    )
    if "fpga" in meta:  # a throughput budget: the plan's figure on the fixed design
        fpga = meta["fpga"]
        lines.append(
            f"{fpga['device']}: {fpga['modelled_images_per_s']:.6g} images/s modelled "
            f"(target {fpga['target_images_per_s']:.6g}; weights on chip: "
            f"{fpga['weights_on_chip']})"
        )
    return lines
