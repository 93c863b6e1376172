"""Allocation methods at equal weight size on ResNet-20 (CIFAR-10 JPEG), each after the same QAT.

Every method starts from the pretrained ResNet-20 (no adaptation to the JPEG images) and
ends in a plan that ``mixq.quantize`` applies, at the weight size of RMSMP's 60 : 35 : 5
ratio (about 4.2 equivalent bits), with the same activation bits (first and last layer
Fixed-8 with 8-bit inputs, as in the presets), the same calibration and GPTQ rounding, and
the same short QAT budget (SGD, warm-up and cosine, logit distillation from the float
model):

- ``rmsmp``: the preset ratio per layer; rows by the perturbation proxy and the variance rule;
- ``rmsmp-hessian``: the same ratio; rows by their Hessian trace times their perturbation;
- ``hawq-v3-ilp``: one of Fixed-4 / Fixed-8 per layer, HAWQ-V3's ILP on ``trace/n * ||dW||^2``;
- ``dfq``: per-row fixed-point bit widths (2..8) by gradient descent, rounded to the size;
- ``joint-ilp``: per layer one of six scheme-and-precision ratios, row-wise Hessian costs.

One Hutchinson table (per-layer probes over random training batches) serves the three
Hessian methods; its time is reported once, as ``sensitivity_s`` of each row that uses it.

    python benchmarks/allocation_compare.py
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import add_run_options, resnet20_qat_config, start_run, top1, write_result
from _planners import EDGE, make_plan, method_recipe, sensitivity_table, weight_bits
from torch import nn

import mixq
from mixq.data import cifar10_loader
from mixq.models import load_pretrained_cifar_resnet, resnet20
from mixq.plan import Plan
from mixq.sensitivity import (
    HAWQ_CANDIDATES,
    JOINT_CANDIDATES,
    HutchinsonConfig,
    SensitivityTable,
)
from mixq.summary import fp32_weight_kib
from mixq.train import TrainConfig, train

NAME = "allocation_compare"
EQ_BITS = 4  # RMSMP's 60 : 35 : 5 size, the size every planned method meets
DFQ_SEED = 0  # DfqConfig's default seed, the one this benchmark always ran with
METHODS = ("rmsmp-hessian", "rmsmp", "hawq-v3-ilp", "dfq", "joint-ilp")
HESSIAN_METHODS = ("rmsmp-hessian", "hawq-v3-ilp", "joint-ilp")
_NOT_IN_KEY = {"methods", "resume", "output", "work_dir", "threads"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--act-bits", type=int, default=4)
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument(
        "--train-images", type=int, default=12800, help="class-balanced training subset for QAT"
    )
    parser.add_argument("--test-images", type=int, default=None, help="limit (default all)")
    parser.add_argument("--hessian-probes", type=int, default=8, help="per layer")
    parser.add_argument("--hessian-batch", type=int, default=128)
    parser.add_argument("--dfq-steps", type=int, default=200)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("runs/allocation_compare"),
        help="sensitivity table, plans and finished rows (reused with --resume)",
    )
    parser.add_argument("--resume", action="store_true", help="reuse finished rows and table")
    add_run_options(parser, threads=1)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    wall_start = time.perf_counter()
    root = start_run(args)
    cifar = root / "cifar10-jpeg"
    weights = root / "resnet-cifar10" / "resnet20-12fca82f.th"
    train_loader = cifar10_loader(
        cifar, "train", args.batch, train_augment=True, shuffle=True, limit=args.train_images
    )
    test_loader = cifar10_loader(cifar, "test", 500, limit=args.test_images)
    calib = list(cifar10_loader(cifar, "train", 64, limit=512))
    base = load_pretrained_cifar_resnet(resnet20(), weights).eval()
    names = mixq.quantizable_layer_names(base)
    recipe = method_recipe("rmsmp", EQ_BITS, args.act_bits)  # the rmsmp preset, edges Fixed-8
    target_bits = weight_bits(base, recipe)
    total_weights = sum(base.get_submodule(n).weight.numel() for n in names)
    qat = resnet20_qat_config(args.qat_epochs)
    hessian = HutchinsonConfig(
        min_probes=args.hessian_probes, max_probes=args.hessian_probes, probe_scope="layer"
    )
    settings: dict[str, Any] = {
        "model": "resnet20, pretrained (no adaptation to the JPEG images)",
        "act_bits": args.act_bits,
        "first_last": f"{EDGE} with 8-bit inputs",
        "size_target": "weight bits of rmsmp (sp2-4:0.6,fixed-4:0.35,fixed-8:0.05), all layers",
        "target_weight_bits": target_bits,
        "target_eq_bits": round(target_bits / total_weights, 4),
        "ptq": "calibration + GPTQ rounding, 512 training images",
        "qat": qat.to_dict(),
        "batch": args.batch,
        "train_images": args.train_images,
        "qat_steps": len(train_loader) * args.qat_epochs,
        "teacher": "the pretrained float model",
        "test_images": args.test_images or 10000,
        "calibration_images": 512,
        "hessian": {
            **hessian.__dict__,
            "batch": args.hessian_batch,
            "data": "random training batches (the training subset)",
        },
        "hawq_candidates": list(HAWQ_CANDIDATES),
        "joint_candidates": list(JOINT_CANDIDATES),
        "dfq": {"steps": args.dfq_steps, "granularity": "row", "scheme": "fixed", "bits": "2..8"},
        "timings": "single runs; sensitivity_s is one shared Hutchinson run",
        "runs": 1,
    }
    args.work_dir.mkdir(parents=True, exist_ok=True)
    # A finished row is reused (--resume) only if it was measured with these settings.
    key = {k: str(v) for k, v in vars(args).items() if k not in _NOT_IN_KEY}
    fp32 = {"method": "fp32", "eq_bits": 32.0, "top1": top1(base, test_loader)}
    fp32["weight_kib"] = round(fp32_weight_kib(base), 1)
    rows: list[dict[str, Any]] = [fp32]
    print(fp32, flush=True)

    table: SensitivityTable | None = None
    if any(m in HESSIAN_METHODS for m in args.methods):
        table = _sensitivity(base, cifar, args, hessian, str(weights))
        settings["hessian"]["hvp_count"] = table.run.hvp_count
        settings["hessian"]["max_rel_stderr"] = round(table.run.max_rel_stderr, 4)

    def planner(method: str) -> Callable[[], Plan | None]:
        # The planners of _planners (shared with method_compare), at 4-bit equivalent size.
        return lambda: make_plan(
            method,
            base,
            EQ_BITS,
            args.act_bits,
            table=table,
            train_data=train_loader,
            dfq_steps=args.dfq_steps,
            seed=DFQ_SEED,
        )

    for method in args.methods:
        cached = args.work_dir / method / "row.json"
        saved = json.loads(cached.read_text()) if args.resume and cached.is_file() else {}
        if saved.get("key") == key:
            row = saved["row"]
        else:
            row = _run_method(
                method, planner(method), base, recipe, calib, train_loader, test_loader, qat, args
            )
            if table is not None and method in HESSIAN_METHODS:
                row["sensitivity_s"] = round(table.run.seconds, 1)
            row["total_s"] = round(sum(v for k, v in row.items() if k.endswith("_s")), 1)
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps({"key": key, "row": row}, indent=2) + "\n")
        rows.append(row)
        print(_format(row), flush=True)
        write_result(NAME, settings, rows, args.output)
    settings["wall_s"] = round(time.perf_counter() - wall_start)
    path = write_result(NAME, settings, rows, args.output)
    print(f"wrote {path} ({settings['wall_s']} s)")


def _sensitivity(
    base: nn.Module, cifar: Path, args: argparse.Namespace, config: HutchinsonConfig, weights: str
) -> SensitivityTable:
    path = args.work_dir / "sensitivity.json"
    key = {
        "config": config.__dict__,
        "batch": args.hessian_batch,
        "train_images": args.train_images,
        "weights": weights,
    }
    if not args.resume:  # a table is reused only with --resume
        path.with_suffix(".key.json").unlink(missing_ok=True)
    data = cifar10_loader(
        cifar, "train", args.hessian_batch, shuffle=True, seed=1, limit=args.train_images
    )
    table = sensitivity_table(base, data, config, path, key, weights)
    print(
        f"hessian: {table.run.hvp_count} products in {table.run.seconds:.1f} s, "
        f"worst rel. s.e. {table.run.max_rel_stderr:.3f}",
        flush=True,
    )
    return table


def _run_method(
    method: str,
    planner: Callable[[], Plan | None],
    base: nn.Module,
    recipe: mixq.Recipe,
    calib: list,
    train_loader: Any,
    test_loader: Any,
    qat: TrainConfig,
    args: argparse.Namespace,
) -> dict[str, Any]:
    start = time.perf_counter()
    plan = planner()
    allocation_s = time.perf_counter() - start
    if plan is not None:
        plan.save(args.work_dir / method / "plan.json")
    start = time.perf_counter()
    model = mixq.quantize(
        base,
        recipe,
        plan=plan,
        calibration_data=calib,
        calibration_batches=len(calib),
        progress=False,
    )
    ptq_s = time.perf_counter() - start
    ptq = top1(model, test_loader)
    print(f"{method}: PTQ top-1 {ptq:.4f}", flush=True)
    start = time.perf_counter()
    train(model, train_loader, qat, teacher=base, progress=False)
    train_s = time.perf_counter() - start
    summary = mixq.describe(model)
    row: dict[str, Any] = {
        "method": method,
        "eq_bits": round(summary.eq_bits, 3),
        "weight_kib": round(summary.weight_kib, 1),
        "top1_ptq": ptq,
        "top1": top1(model, test_loader),
        "allocation_s": round(allocation_s, 1),
        "ptq_s": round(ptq_s, 1),
        "train_s": round(train_s, 1),
    }
    rows_per_candidate: Counter[str] = Counter()
    for layer in summary.layers:
        rows_per_candidate.update(layer.counts)
    row["rows_per_candidate"] = dict(sorted(rows_per_candidate.items()))
    if plan is not None and method in ("hawq-v3-ilp", "joint-ilp"):
        row["choices"] = {n: str(layer.ratio) for n, layer in plan.layers.items()}
        row["ilp_solve_s"] = round(plan.metadata["solve_s"], 4)
    if method == "dfq" and plan is not None:
        row["dfq_real_eq_bits"] = round(plan.metadata["real_eq_bits"], 3)
    return row


def _format(row: dict[str, Any]) -> str:
    return (
        f"{row['method']:<14} eq bits {row['eq_bits']:.3f}  {row['weight_kib']:.1f} KiB  "
        f"PTQ {row['top1_ptq']:.4f}  QAT {row['top1']:.4f}  total {row['total_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
