"""Where the throughput-budgeted joint ILP sits against Fixed-b, SP2, MSP and RMSMP on the
(proxy objective, modelled images/s) plane, for ResNet-20's layer shapes. Pure cost: no
training, no accuracy; the proxy is the ILP's own objective, the sum over layers of
HAWQ's ``Omega = trace/n * ||Q(W) - W||^2`` per row (lower is better).

Sensitivity: a Hessian table of the background ``method_compare`` run when one exists
under ``runs/method_compare/sensitivity/``, else the per-layer Hutchinson traces of the
pretrained ResNet-20 committed in ``benchmarks/results/sensitivity_cost.json`` (measured,
fixed batch), spread evenly over each layer's rows (the row split is then not
measured). The squared errors come from the pretrained weights.

For each bit level, the ratio methods are costed as their recipes quantise the model
(first and last layer Fixed-8 with 8-bit inputs); the joint ILP is solved with only a
throughput budget on XC7Z045 at a sweep of targets and at each ratio method's own
images/s, and the result says which points lie on the front.

    python benchmarks/fpga_ilp_pareto.py
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import RESULTS_DIR, write_result
from _planners import (
    EDGE,
    FPGA_DEVICE,
    RATIO_METHODS,
    TARGET_SHADE,
    fixed_images_per_s,
    fpga_joint_plan,
    joint_candidates,
    ratio_plan,
)
from _seeds import pareto_front

import mixq
from mixq.allocation.fpga_budget import FpgaThroughput, throughput_costs
from mixq.allocation.options import PerturbationTable
from mixq.errors import InfeasibleBudgetError
from mixq.hw import AcceleratorConfig, FpgaCostModel, hardware_point
from mixq.hw.option_cycles import plan_on_design
from mixq.hw.workload import layer_work
from mixq.jsonfile import read_json
from mixq.models import load_pretrained_cifar_resnet, resnet20
from mixq.plan import LayerPlan, LayerShape, Plan
from mixq.ratio import Ratio
from mixq.sensitivity import (
    HutchinsonConfig,
    LayerSensitivity,
    SensitivityTable,
    TraceRun,
    perturbation_table,
)
from mixq.shapes import measure_layer_shapes

DEVICES = ("xc7z020", "xc7z045")
ROOT = Path(__file__).resolve().parents[1]
COMMITTED_TRACES = RESULTS_DIR / "sensitivity_cost.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--act-bits", type=int, default=4)
    parser.add_argument("--eq-bits", type=int, nargs="+", default=[4, 3])
    parser.add_argument("--sweep", type=int, default=12, help="throughput targets per level")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--traces",
        choices=("auto", "committed"),
        default="auto",
        help="auto: the method_compare Hessian table when one exists, else the committed "
        "per-layer traces; committed: those traces always (the figures before the run)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    start = time.perf_counter()
    weights = args.data_root / "resnet-cifar10" / "resnet20-12fca82f.th"
    base = load_pretrained_cifar_resnet(resnet20(), weights).eval()
    shapes = measure_layer_shapes(base, torch.zeros(1, 3, 32, 32))
    table, source = sensitivity(base, shapes, committed_only=args.traces == "committed")
    names = mixq.quantizable_layer_names(base)
    edges = (names[0], names[-1])
    layer_act_bits = {n: max(args.act_bits, 8) if n in edges else args.act_bits for n in names}
    rows: list[dict[str, Any]] = []
    for eq_bits in args.eq_bits:
        options = perturbation_table(
            base,
            table,
            joint_candidates(eq_bits),
            overrides=dict.fromkeys(edges, (EDGE,)),
            granularity="row",
        )
        rows += level_rows(options, shapes, eq_bits, args.act_bits, layer_act_bits, args.sweep)
    for row in rows:
        print(
            f"w{row['eq_bits_target']} {row['method']:<26} {row['target']:<16} "
            f"omega {row['proxy_omega']:9.4g}  XC7Z045 "
            f"{row['fpga_images_per_s'][FPGA_DEVICE]:8.1f} img/s (fixed design "
            f"{row['fixed_design_images_per_s']:8.1f})  eq-bits {row['eq_bits']:.3f}  "
            f"front {row['on_front_xc7z045']}/{row.get('on_front_at_rmsmp_size', '-')}"
        )
    settings = {
        "model": "resnet20 (pretrained), layer shapes at 32x32",
        "sensitivity": source,
        "act_bits": args.act_bits,
        "edges": f"first and last layer {EDGE} with {max(args.act_bits, 8)}-bit inputs",
        "budget_device": FPGA_DEVICE,
        "dsp_packing": AcceleratorConfig().dsp_packing,
        "proxy": "sum of the joint ILP's per-row Omega = trace/n * ||Q(W) - W||^2 (lower is "
        "better); the ratio methods' Omega is the table's for their ratio, rows assigned by "
        "the table's Hessian rule",
        "images_per_s": "modelled by mixq.hw (batch 1, off-chip memory), not measured: "
        "fpga_images_per_s with the arrays sized to each plan (hardware_point), "
        "fixed_design_images_per_s on the accelerator the ILP budget fixes",
        "methods": "ratio methods as their recipes; joint-ilp-fpga: the joint ILP with only a "
        "throughput budget on XC7Z045 (at each ratio method's images/s and a sweep); "
        "joint-ilp-fpga+rmsmp-size: the same with RMSMP's weight bits as a second limit",
        "front": "on_front_xc7z045: no other row of the same bit level has lower-or-equal "
        "omega and higher-or-equal XC7Z045 images/s (hardware_point), one strictly; "
        "on_front_at_rmsmp_size: the same among the rows within RMSMP's weight bits",
        "threads": args.threads,
        "load_average_at_start": round(load_start[0], 2),
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    path = write_result("fpga_ilp_pareto", settings, rows)
    print(f"wrote {path}")
    print(f"wrote {figure(rows, RESULTS_DIR / 'fpga_ilp_pareto.png')}")


def sensitivity(
    base: torch.nn.Module, shapes: dict[str, LayerShape], *, committed_only: bool = False
) -> tuple[SensitivityTable, str]:
    """The Hessian table to use and a sentence saying where it comes from."""
    measured = sorted((ROOT / "runs" / "method_compare" / "sensitivity").glob("seed*.json"))
    measured = [p for p in measured if not p.name.endswith(".key.json") and not committed_only]
    if measured:
        return SensitivityTable.load(measured[0]), f"Hessian table {measured[0].relative_to(ROOT)}"
    result = read_json(COMMITTED_TRACES, "benchmark result", ValueError)
    row = next(r for r in result["rows"] if r["method"] == "hutchinson-layer")
    traces = {layer["layer"]: float(layer["trace"]) for layer in row["per_layer"]}
    missing = [n for n in mixq.quantizable_layer_names(base) if n not in traces]
    if missing:
        raise SystemExit(f"{COMMITTED_TRACES} has no trace for {missing}")
    layers = {
        name: LayerSensitivity(
            shape,
            1,
            traces[name],
            0.0,
            np.full(shape.rows, traces[name] / shape.rows),
            np.zeros(shape.rows),
        )
        for name, shape in shapes.items()
        if name in traces
    }
    run = TraceRun("resnet20", "", "cross_entropy", HutchinsonConfig(), 1, 0, 0, True, 0.0, 0.0)
    return SensitivityTable(layers, run), (
        f"per-layer Hutchinson traces of {COMMITTED_TRACES.relative_to(ROOT)} "
        f"({row['method']}, {row['data']}), split evenly over rows"
    )


def level_rows(
    options: PerturbationTable,
    shapes: dict[str, LayerShape],
    eq_bits: int,
    act_bits: int,
    layer_act_bits: dict[str, int],
    sweep: int,
) -> list[dict[str, Any]]:
    """The ratio methods and the ILP's points at one bit level, with front membership."""
    spec = FpgaThroughput(FPGA_DEVICE, 1.0)
    design = throughput_costs(spec, options, layer_act_bits).design
    model = FpgaCostModel(FPGA_DEVICE)

    def row(plan: Plan, method: str, target: str) -> dict[str, Any]:
        point = hardware_point(plan, shapes, devices=DEVICES, act_bits=act_bits)
        fixed = plan_on_design(model, design, shapes, plan, act_bits=act_bits).totals.latency_s
        return {
            "method": method,
            "eq_bits_target": eq_bits,
            "target": target,
            "proxy_omega": proxy(options, plan),
            "fpga_images_per_s": {d: round(v, 2) for d, v in point.images_per_s.items()},
            "fixed_design_images_per_s": round(1.0 / fixed, 2) if fixed else None,
            "weight_kib": round(point.weight_kib, 2),
            "weight_bits": int(sum(w.weight_bits for w in layer_work(shapes, plan))),
            "eq_bits": round(point.eq_bits, 4),
            "plan": {n: str(layer.ratio) for n, layer in plan.layers.items()},
        }

    ratio_plans = {m: ratio_plan(shapes, m, eq_bits, act_bits) for m in RATIO_METHODS}
    rows = [row(plan, m, "recipe") for m, plan in ratio_plans.items()]
    # Each ratio method's own images/s (unrounded; Fixed-b's is joint-ilp-fpga's budget in
    # the planners), then a sweep up to past the fastest plan the design allows.
    targets = {
        f"{m} images/s": hardware_point(plan, shapes, devices=[FPGA_DEVICE]).images_per_s[
            FPGA_DEVICE
        ]
        for m, plan in ratio_plans.items()
    }
    assert targets["fixed images/s"] == fixed_images_per_s(shapes, eq_bits, act_bits)
    # Every layer Fixed-8 (middle inputs still at act_bits): as fast as Fixed-b here?
    all_8 = ratio_plans["fixed"].layers.items()
    eight = Plan({n: LayerPlan(Ratio.parse(EDGE), layer.act_bits) for n, layer in all_8})
    rows.append(row(eight, "fixed-8 everywhere", "recipe"))
    rmsmp_bits = int(sum(w.weight_bits for w in layer_work(shapes, ratio_plans["rmsmp"])))
    slow, fast = min(targets.values()), max(targets.values()) * 1.6
    for value in np.geomspace(slow, fast, sweep):
        targets.setdefault(f"sweep {value:.0f}", float(value))
    targets = {label: value * (1 - TARGET_SHADE) for label, value in targets.items()}
    for label, value in targets.items():
        # Throughput alone, and also at RMSMP's weight bits (equal size and throughput).
        for method, size in (("joint-ilp-fpga", None), ("joint-ilp-fpga+rmsmp-size", rmsmp_bits)):
            if size is not None and not label.endswith(" images/s"):
                continue
            try:
                plan = fpga_joint_plan(options, value, layer_act_bits, weight_bits=size)
            except InfeasibleBudgetError as exc:
                print(f"w{eq_bits} {method} at {label}: {exc}")
                continue
            extra = {"target_images_per_s": round(value, 2), "weight_bits_limit": size}
            rows.append(row(plan, method, label) | extra)
    mark_front(rows, "on_front_xc7z045")
    # Among the plans no larger than RMSMP's (every ratio method and the size-capped ILP).
    mark_front([r for r in rows if r["weight_bits"] <= rmsmp_bits], "on_front_at_rmsmp_size")
    return rows


def mark_front(rows: list[dict[str, Any]], key: str) -> None:
    """Set ``key`` on each row: no other row has lower-or-equal omega and higher-or-equal
    XC7Z045 images/s, one of them strictly."""
    front = pareto_front(
        [(r["fpga_images_per_s"][FPGA_DEVICE], -r["proxy_omega"]) for r in rows], maximise_x=True
    )
    for index, r in enumerate(rows):
        r[key] = index in front


def figure(rows: list[dict[str, Any]], path: Path) -> Path:
    """Proxy Omega against modelled XC7Z045 images/s, one panel per bit level: the ratio
    methods, the throughput-budgeted ILP's sweep (line) and its points at RMSMP's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({r["eq_bits_target"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(levels), figsize=(5.6 * len(levels), 4.4), squeeze=False)
    for ax, level in zip(axes[0], levels, strict=True):
        at = [r for r in rows if r["eq_bits_target"] == level]
        ilp = sorted(
            (r for r in at if r["method"] == "joint-ilp-fpga"),
            key=lambda r: r["fpga_images_per_s"][FPGA_DEVICE],
        )
        ax.plot(
            [r["fpga_images_per_s"][FPGA_DEVICE] for r in ilp],
            [r["proxy_omega"] for r in ilp],
            "-o",
            color="black",
            markersize=3,
            label="joint-ilp-fpga (throughput only)",
        )
        for r in at:
            if r["method"] == "joint-ilp-fpga":
                continue
            sized = r["method"].endswith("rmsmp-size")
            ax.plot(
                r["fpga_images_per_s"][FPGA_DEVICE],
                r["proxy_omega"],
                "s" if sized else "o",
                markersize=7,
                fillstyle="none" if sized else "full",
                **({"color": "dimgray"} if sized else {}),
                label="joint-ilp-fpga at RMSMP's size" if sized else r["method"],
            )
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7)
        ax.set_yscale("log")
        ax.set_xlabel(f"modelled images/s, {FPGA_DEVICE.upper()} (batch 1)")
        ax.set_ylabel("proxy Omega (lower is better)")
        ax.set_title(f"ResNet-20, W{level} equivalent, A4")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def proxy(options: PerturbationTable, plan: Plan) -> float:
    """The table's total Omega for ``plan``'s per-layer choice."""
    total = 0.0
    for name, layer in plan.layers.items():
        choices = options.layers[name]
        total += float(choices.omegas()[choices.labels.index(str(layer.ratio))])
    return total


if __name__ == "__main__":
    main()
