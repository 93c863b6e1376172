"""Every method with several seeds at 4- and 3-bit equivalent weights, A4, on ResNet-20
(CIFAR-10 JPEG): top-1 mean and standard error, modelled FPGA images/s and weight KiB.

Methods: Fixed (``fixed4``/``fixed3``), SP2, MSP, RMSMP (proxy rule), RMSMP with the
Hessian rule, HAWQ-V3 ILP, DFQ (at RMSMP's size, and at Fixed's as ``dfq-fixed-size``),
joint ILP (planners in ``_planners``). Every method starts
from the pretrained ResNet-20, keeps first and last layer Fixed-8 with 8-bit inputs, is
calibrated with GPTQ rounding and fine-tuned with the same QAT budget (SGD, cosine, logit
distillation from the float model). The planned methods meet RMSMP's weight size at each
level. The seed sets the training order and augmentation, the QAT randomness, the
calibration subset, the Hessian probes and DFQ's search.

Each (method, eq_bits, seed) is one unit stored under ``--work-dir`` with a key of its
settings: finished units are reused, an interrupted one resumes from its trainer
checkpoint, and ``--budget-minutes`` ends a chunk cleanly after the current unit (rerun
the same command to continue). Each finished unit's record (settings, row, plan) is also
kept in the ledger ``units/method_compare/`` beside the result file and committed with it,
so a fresh checkout finds every finished unit; a row (method and level) with no unit in either
is kept from the result file the report replaces, or from an earlier one (``--carry-from``),
when that was made with the same settings (``settings.carried`` says which). Top-1 is
recorded after every QAT epoch; the settings say whether the ranking of the methods by mean
changed between the last two epochs.

    nohup nice -n 10 python benchmarks/method_compare.py --seeds 0 1 2 --qat-epochs 3 \
        --budget-minutes 100 > method_compare.log 2>&1 &
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _carried import carried_rows, earlier_results
from _common import RESULTS_DIR, add_run_options, resnet20_qat_config, start_run, top1
from _common import write_result as write_json
from _hardware import hardware_figures, layer_shapes
from _pareto_plot import front_members, pareto_figure
from _planners import (
    EQ_BITS,
    HESSIAN_METHODS,
    METHODS,
    PLANNED_METHODS,
    expected_rows,
    make_plan,
    method_recipe,
    row_name,
)
from _planners import sensitivity_table as hessian_table
from _seeds import (
    BenchmarkSettingsError,
    WallBudget,
    add_chunk_options,
    aggregate,
    check_seeded_run,
    convergence_by_level,
    rows_complete,
    run_units,
    unit_key,
    units_left_line,
)
from _unit_store import UnitStore, settings_key
from torch import nn

import mixq
from mixq.data import cifar10_loader
from mixq.io import atomic_write_text
from mixq.models import load_pretrained_cifar_resnet, resnet20
from mixq.plan import Plan
from mixq.sensitivity import HutchinsonConfig
from mixq.summary import fp32_weight_kib
from mixq.train import train

NAME = "method_compare"
# A result file's rows may be carried into the next report only when these agree.
AGREED_SETTINGS = ("model", "act_bits", "first_last", "seeds", "qat", "batch", "train_images")
AGREED_SETTINGS += ("test_images", "calibration_images", "hessian", "dfq_steps", "fp32_top1")
MEAN_FIELDS = ("eq_bits", "top1_ptq", "top1_per_epoch", "fpga_images_per_s", "weight_kib")


def row_order(row: dict[str, Any]) -> tuple[int, int]:
    """Rows by level (4 before 3, as the units run), then in the order of ``METHODS``.

    >>> sorted([{"method": "msp", "eq_bits_target": 4}, {"method": "fixed3", "eq_bits_target": 3},
    ...         {"method": "fixed4", "eq_bits_target": 4}], key=row_order)[0]["method"]
    'fixed4'
    """
    level = row["eq_bits_target"]
    names = [row_name(m, level) for m in METHODS]
    place = names.index(row["method"]) if row["method"] in names else len(names)
    return -level, place


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--eq-bits", nargs="+", type=int, default=list(EQ_BITS), choices=EQ_BITS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--act-bits", type=int, default=4)
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--train-images", type=int, default=12800, help="class-balanced subset")
    parser.add_argument("--test-images", type=int, default=None, help="limit (default all)")
    parser.add_argument("--calib-images", type=int, default=512)
    parser.add_argument(
        "--hessian",
        choices=["hutchinson", "exact"],
        default="hutchinson",
        help="the Hessian methods' traces: Hutchinson probes, or exact (Gauss-Newton, equal "
        "to the Hessian's for ResNet-20) over as many batches",
    )
    parser.add_argument(
        "--hessian-probes", type=int, default=8, help="per layer (exact: the batches)"
    )
    parser.add_argument("--hessian-batch", type=int, default=128)
    parser.add_argument("--dfq-steps", type=int, default=200)
    add_chunk_options(parser, Path("runs/method_compare"), NAME)
    parser.add_argument(
        "--refresh-hardware",
        action="store_true",
        help="recompute finished units' modelled FPGA figures with the current cost model "
        "(from each unit's recipe and stored plan; accuracy is not touched)",
    )
    add_run_options(parser, threads=1)
    args = parser.parse_args(argv)
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Refuse settings that cannot give a standard error or a run, before any work."""
    counts = ("qat_epochs", "batch", "train_images", "calib_images", "hessian_probes")
    check_seeded_run(args, counts, RESULTS_DIR)
    if any(m in HESSIAN_METHODS for m in args.methods):
        hutchinson_config(args, 0)  # its own checks (two probes at least), before any work
    if args.test_images is not None and args.test_images < 1:
        raise BenchmarkSettingsError("--test-images must be >= 1")


def unit_settings(args: argparse.Namespace, method: str, eq_bits: int, seed: int) -> dict:
    """Everything one unit's result depends on (its key): not the output, budget, threads,
    nor the Hessian or DFQ settings of a method that does not use them."""
    unused = {"refresh_hardware"}
    if method not in HESSIAN_METHODS:
        unused |= {"hessian_probes", "hessian_batch", "hessian"}
    elif args.hessian == "hutchinson":
        unused |= {"hessian"}  # the keys of units run before the option existed
    if not method.startswith("dfq"):
        unused |= {"dfq_steps"}
    return unit_key(NAME, args, (method, eq_bits, seed), unused)


def hutchinson_config(args: argparse.Namespace, seed: int) -> HutchinsonConfig:
    return HutchinsonConfig(
        min_probes=args.hessian_probes,
        max_probes=args.hessian_probes,
        probe_scope="layer",
        seed=seed,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall = time.perf_counter()
    budget = WallBudget(args.budget_minutes)
    root = start_run(args)
    cifar = root / "cifar10-jpeg"
    weights = root / "resnet-cifar10" / "resnet20-12fca82f.th"
    base = load_pretrained_cifar_resnet(resnet20(), weights).eval()
    test_loader = cifar10_loader(cifar, "test", 500, limit=args.test_images)
    shapes = layer_shapes(base, torch.zeros(1, 3, 32, 32))
    store = UnitStore(args.work_dir, ledger=ledger_dir(args), kept_files=("plan.json",))
    pending = [(m, b, s) for b in args.eq_bits for m in args.methods for s in args.seeds]
    unstarted = 0
    if args.report_only:
        finished = [
            (m, b, s)
            for m, b, s in pending
            if store.load(f"{m}-w{b}-s{s}", unit_settings(args, m, b, s)) is not None
        ]
        unstarted, pending = len(pending) - len(finished), finished

    def run_one(unit: tuple[str, int, int]) -> dict[str, Any]:
        method, eq_bits, seed = unit
        settings = unit_settings(args, method, eq_bits, seed)
        label = f"{method}-w{eq_bits}-s{seed}"
        row = store.load(label, settings)
        if row is not None and args.refresh_hardware:
            plan_text = store.kept_file(label, settings, "plan.json")
            row = {**row, **refreshed_hardware(args, base, shapes, plan_text, method, eq_bits)}
        if row is None:
            unit_dir = store.unit_dir(label, settings)
            row = run_unit(
                args,
                base,
                cifar,
                str(weights),
                test_loader,
                shapes,
                unit_dir,
                method,
                eq_bits,
                seed,
            )
            store.save(label, settings, row)
        print(format_unit(row), flush=True)
        return row

    units, left = run_units(pending, budget, run_one)
    left += unstarted
    stopped = left > 0
    if stopped:
        print(units_left_line(left, args.report_only), flush=True)
    fp32 = {"method": "fp32", "top1": top1(base, test_loader), "weight_kib": fp32_weight_kib(base)}
    rows = aggregate(units, "top1", mean_fields=MEAN_FIELDS)
    for row in rows:
        row["act_bits"] = args.act_bits
    previous = earlier_results(args.output / f"{args.name}.json", args.carry_from)
    agreed = {k: v for k, v in result_settings(args, [], fp32).items() if k in AGREED_SETTINGS}
    reported = {(r["method"], r["eq_bits_target"]) for r in rows}
    carried, carry_note = carried_rows(previous, reported, agreed)
    rows = sorted(rows + carried, key=row_order)
    settings = result_settings(args, rows, fp32, carry_note, stopped, time.perf_counter() - wall)
    args.output.mkdir(parents=True, exist_ok=True)
    path = write_json(args.name, settings, [fp32, *rows], args.output)
    if rows:
        pareto_figure(
            rows,
            "top1",
            args.output / f"{args.name}.png",
            f"ResNet-20, CIFAR-10 JPEG, A{args.act_bits}",
        )
    print(f"wrote {path}" + ("" if settings["complete"] else " (partial)"))
    return 0


def run_unit(
    args: argparse.Namespace,
    base: nn.Module,
    cifar: Path,
    weights: str,
    test_loader: Any,
    shapes: dict,
    unit_dir: Path,
    method: str,
    eq_bits: int,
    seed: int,
) -> dict[str, Any]:
    """One (method, eq_bits, seed): plan, PTQ, QAT with a checkpoint every epoch."""
    start = time.perf_counter()
    unit_dir.mkdir(parents=True, exist_ok=True)
    train_loader = cifar10_loader(
        cifar,
        "train",
        args.batch,
        train_augment=True,
        shuffle=True,
        limit=args.train_images,
        seed=seed,
    )
    calib = list(cifar10_loader(cifar, "train", 64, limit=args.calib_images, seed=seed))
    plan_path = unit_dir / "plan.json"
    if plan_path.is_file():
        plan: Plan | None = Plan.load(plan_path)
    else:
        table = None
        if method in HESSIAN_METHODS:
            table = _table(args, base, cifar, weights, seed)
        plan = make_plan(
            method,
            base,
            eq_bits,
            args.act_bits,
            table=table,
            train_data=train_loader,
            dfq_steps=args.dfq_steps,
            seed=seed,
        )
        if plan is not None:
            plan.save(plan_path)
    allocation_s = time.perf_counter() - start
    recipe = method_recipe(method, eq_bits, args.act_bits)
    model = mixq.quantize(
        base,
        recipe,
        plan=plan,
        calibration_data=calib,
        calibration_batches=len(calib),
        progress=False,
    )
    ptq_path = unit_dir / "ptq.json"
    if ptq_path.is_file():
        ptq = json.loads(ptq_path.read_text())["top1_ptq"]
    else:
        ptq = top1(model, test_loader)
        atomic_write_text(ptq_path, json.dumps({"top1_ptq": ptq}) + "\n")
    qat = resnet20_qat_config(args.qat_epochs)
    qat = dataclasses.replace(qat, seed=seed)
    train_start = time.perf_counter()
    result = train(
        model,
        train_loader,
        qat,
        teacher=base,
        evaluate=lambda m: {"top1": top1(m, test_loader)},
        output_dir=unit_dir / "train",
        resume=True,
        progress=False,
    )
    per_epoch = [record.metrics["top1"] for record in result.history]
    summary = mixq.describe(model)
    return {
        "method": row_name(method, eq_bits),
        "eq_bits_target": eq_bits,
        "seed": seed,
        "eq_bits": round(summary.eq_bits, 4),
        "top1_ptq": ptq,
        "top1": per_epoch[-1],
        "top1_per_epoch": per_epoch,
        **hardware_figures(model, shapes, args.act_bits),
        "model_kib": round(summary.weight_kib, 1),
        "allocation_s": round(allocation_s, 1),
        "train_s_this_chunk": round(time.perf_counter() - train_start, 1),
        "epoch_s": [round(record.seconds, 1) for record in result.history],
        "unit_s_this_chunk": round(time.perf_counter() - start, 1),
    }


def ledger_dir(args: argparse.Namespace) -> Path:
    """Where each finished unit's record is kept beside the result (committed with it)."""
    return args.output / "units" / args.name


def refreshed_hardware(
    args: argparse.Namespace,
    base: nn.Module,
    shapes: dict,
    plan_text: str | None,
    method: str,
    eq_bits: int,
) -> dict[str, Any]:
    """A finished unit's FPGA figures under the current cost model. They depend only on
    each layer's scheme counts and bits, which the recipe and the unit's stored plan fix,
    so the model is rebuilt without calibration (its weights do not enter the figures)."""
    if plan_text is None and method in PLANNED_METHODS:
        # Without its plan the recipe alone would give the uniform ratio's figures.
        raise BenchmarkSettingsError(
            f"no stored plan for the finished {method} unit at W{eq_bits}: its FPGA figures "
            "cannot be recomputed (run without --refresh-hardware)"
        )
    plan = None if plan_text is None else Plan.from_dict(json.loads(plan_text))
    recipe = method_recipe(method, eq_bits, args.act_bits)
    model = mixq.quantize(base, recipe, plan=plan, progress=False)
    return hardware_figures(model, shapes, args.act_bits)


def _table(args: argparse.Namespace, base: nn.Module, cifar: Path, weights: str, seed: int):
    config = hutchinson_config(args, seed)
    exact = args.hessian == "exact"
    key = {
        **({"method": "exact", "batches": args.hessian_probes} if exact else {}),
        "config": config.__dict__,
        "batch": args.hessian_batch,
        "train_images": args.train_images,
        "weights": weights,
        "seed": seed,
    }
    data = cifar10_loader(
        cifar, "train", args.hessian_batch, shuffle=True, seed=seed, limit=args.train_images
    )
    path = args.work_dir / "sensitivity" / f"seed{seed}-{settings_key(key)}.json"
    return hessian_table(
        base, data, config, path, key, weights, exact_batches=args.hessian_probes if exact else None
    )


def result_settings(
    args: argparse.Namespace,
    rows: list[dict],
    fp32: dict,
    carried: dict | None = None,
    stopped: bool = False,
    wall_s: float = 0.0,
) -> dict[str, Any]:
    """The settings block; ``carried`` is the note of rows kept from the replaced file."""
    levels = sorted({*args.eq_bits, *(carried or {}).get("levels", [])})
    convergence = convergence_by_level(rows, levels, len(args.seeds), "top1")
    fronts = front_members(rows, "top1") if rows else {}
    return {
        "model": "resnet20, pretrained (no adaptation to the JPEG images)",
        "act_bits": args.act_bits,
        "first_last": "fixed-8 with 8-bit inputs",
        "eq_bits_levels": levels,
        "size_target": "planned methods: weight bits of rmsmp at the level; dfq-fixed-size: "
        "those of fixed-b",
        "seeds": args.seeds,
        "seed_controls": "data order and augmentation, QAT seed, calibration subset, "
        "Hessian probes, DFQ search",
        "qat": {**resnet20_qat_config(args.qat_epochs).to_dict(), "seed": "the unit's seed"},
        "batch": args.batch,
        "train_images": args.train_images,
        "test_images": args.test_images or 10000,
        "calibration_images": args.calib_images,
        "hessian": {
            "traces": args.hessian,
            "probes_per_layer" if args.hessian == "hutchinson" else "batches": args.hessian_probes,
            "batch": args.hessian_batch,
        },
        "dfq_steps": args.dfq_steps,
        "convergence_check": "top-1 on the test set after every QAT epoch of every unit; "
        "'changed' says whether the ranking of methods by mean top-1 differs between the "
        "last two epochs (same cosine schedule, so the epoch before is not a shorter run)",
        "convergence": convergence,
        "pareto_front": fronts,
        "joint_ilp_on_front": {
            p: any(m.startswith("joint-ilp") for m in f) for p, f in fronts.items()
        },
        "joint_ilp_budget": "weight bits (RMSMP's size); the ILP is not given a LUT/DSP budget",
        "fpga": "mixq.hw FPGA cost model, batch 1, default AcceleratorConfig: modelled, "
        "not measured",
        "fpga_figures": "recomputed for every unit with this run's cost model (--refresh-hardware)"
        if args.refresh_hardware
        else "as each unit computed them when it finished",
        "weight_kib": "every quantised weight at its row's bits (no scales, biases, BN)",
        "fp32_top1": fp32["top1"],
        "units": "one record per finished unit (settings, row, plan) in units/<name>/ beside "
        "this file",
        "carried": carried,
        "complete": rows_complete(rows, expected_rows(args.methods, args.eq_bits), len(args.seeds)),
        "units_left_this_chunk": stopped,
        "wall_s_this_chunk": round(wall_s),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def format_unit(row: dict[str, Any]) -> str:
    fps = row["fpga_images_per_s"]
    return (
        f"{row['method']:<14} w{row['eq_bits_target']} seed {row['seed']}  "
        f"eq {row['eq_bits']:.3f}  PTQ {row['top1_ptq']:.4f}  QAT {row['top1']:.4f}  "
        f"{row['weight_kib']:.1f} KiB  {fps['xc7z020']:.0f}/{fps['xc7z045']:.0f} img/s"
    )


if __name__ == "__main__":
    sys.exit(main())
