"""all-MiniLM-L6-v2 with a linear classification head on SST-2: fine-tuned in float, then
every method at W4 and W3 equivalent, A8, after PTQ and after a short QAT with logit
distillation from the float model; dev accuracy mean and standard error over seeds.

Every nn.Linear of the encoder takes the method's ratio with 8-bit inputs; the head is
Fixed-8; embeddings and LayerNorm stay float. The seed sets the float fine-tuning (head
initialisation, order), the calibration subset's order, and the QAT order. Each float
model (per seed) and each (method, eq_bits, seed) is a resumable unit under ``--work-dir``
(as in ``method_compare``, with the committed ledger ``units/glue_sst2/``, and rows with
no unit here carried from the replaced or a ``--carry-from`` file);
``--budget-minutes`` ends a chunk after the current unit. A float model retrained on a
fresh checkout must reach the dev accuracy its ledger record holds (CPU training here is
deterministic), else the run stops: its finished units were distilled from that model.

    HF_HUB_OFFLINE=1 nohup nice -n 10 python benchmarks/glue_sst2.py --seeds 0 1 2 \
        --budget-minutes 100 > glue_sst2.log 2>&1 &
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _carried import carried_rows, earlier_results
from _common import RESULTS_DIR, add_run_options, start_run
from _common import write_result as write_json
from _hardware import hardware_figures, layer_shapes
from _planners import EQ_BITS, RATIO_METHODS, expected_rows, method_ratio, row_name
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
from _sst2 import SentenceClassifier, TokenBatches, accuracy, load_sst2
from _unit_store import UnitStore
from torch import nn

import mixq
from mixq.errors import HardwareCostError
from mixq.models.sentence_encoder import SentenceEncoder, load_minilm
from mixq.ratio import Ratio
from mixq.recipe import LayerConfig, Recipe, Rule
from mixq.train import TrainConfig, train

NAME = "glue_sst2"
HEAD = "classifier"
MEAN_FIELDS = ("eq_bits", "accuracy_ptq", "accuracy_per_epoch", "fpga_images_per_s", "weight_kib")
# A result file's rows may be carried into the next report only when these agree.
AGREED_SETTINGS = ("model", "act_bits", "quantised", "seeds", "train_sentences")
AGREED_SETTINGS += ("qat_sentences", "dev_sentences", "calibration_sentences", "float", "qat")
AGREED_SETTINGS += ("max_length",)
_QUANT_ONLY = {"qat_sentences", "calib_sentences", "qat_epochs", "qat_lr"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(RATIO_METHODS), choices=RATIO_METHODS)
    parser.add_argument("--eq-bits", nargs="+", type=int, default=list(EQ_BITS), choices=EQ_BITS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--train-sentences", type=int, default=8000, help="float fine-tuning")
    parser.add_argument("--qat-sentences", type=int, default=2000, help="QAT distillation")
    parser.add_argument("--dev-sentences", type=int, default=None, help="limit (default all)")
    parser.add_argument("--calib-sentences", type=int, default=128)
    parser.add_argument("--float-epochs", type=int, default=1)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5, help="float fine-tuning")
    parser.add_argument("--qat-lr", type=float, default=2e-5)
    parser.add_argument("--max-length", type=int, default=64)
    add_chunk_options(parser, Path("runs/glue_sst2"), NAME)
    add_run_options(parser, threads=1)
    args = parser.parse_args(argv)
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    counts = ("train_sentences", "qat_sentences", "calib_sentences", "float_epochs")
    counts += ("qat_epochs", "batch", "max_length")
    check_seeded_run(args, counts, RESULTS_DIR)


def unit_settings(args: argparse.Namespace, method: str, eq_bits: int, seed: int) -> dict:
    """The unit's key: a float model's leaves out the quantisation and QAT settings, so
    changing those reuses the float models."""
    return unit_key(NAME, args, (method, eq_bits, seed), _QUANT_ONLY if method == "fp32" else set())


def float_config(args: argparse.Namespace, seed: int) -> TrainConfig:
    return TrainConfig(
        epochs=args.float_epochs,
        lr=args.lr,
        optimizer="adamw",
        weight_decay=0.01,
        warmup_epochs=0.1,
        grad_clip=1.0,
        seed=seed,
    )


def qat_config(args: argparse.Namespace, seed: int) -> TrainConfig:
    return TrainConfig(
        epochs=args.qat_epochs,
        lr=args.qat_lr,
        optimizer="adamw",
        weight_decay=0.0,
        warmup_epochs=0.1,
        grad_clip=1.0,
        distill="logits",
        task_weight=1.0,
        distill_weight=1.0,
        temperature=2.0,
        seed=seed,
    )


def method_recipe(method: str, eq_bits: int) -> Recipe:
    default = LayerConfig(Ratio.parse(method_ratio(method, eq_bits)), act_bits=8)
    return Recipe(default, (Rule(HEAD, ratio=Ratio.parse("fixed-8"), act_bits=8),))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall = time.perf_counter()
    budget = WallBudget(args.budget_minutes)
    root = start_run(args)
    train_set = load_sst2(root / "sst-2" / "train.tsv")
    dev_set = load_sst2(root / "sst-2" / "dev.tsv").head(args.dev_sentences)
    encoder, tokenizer = load_minilm()
    dev = TokenBatches(tokenizer, dev_set, 64, max_length=args.max_length)
    store = UnitStore(args.work_dir, ledger=args.output / "units" / args.name)
    floats: dict[int, nn.Module] = {}

    def float_model(seed: int) -> nn.Module:
        if seed not in floats:
            floats[seed] = fine_tune_float(args, store, encoder, tokenizer, train_set, dev, seed)
        return floats[seed]

    pending = [(m, b, s) for b in args.eq_bits for m in args.methods for s in args.seeds]

    def run_one(unit: tuple[str, int, int]) -> dict[str, Any]:
        method, eq_bits, seed = unit
        settings = unit_settings(args, method, eq_bits, seed)
        label = f"{method}-w{eq_bits}-s{seed}"
        row = store.load(label, settings)
        if row is None:
            teacher = float_model(seed)
            row = run_unit(
                args,
                teacher,
                tokenizer,
                train_set,
                dev,
                store.unit_dir(label, settings),
                method,
                eq_bits,
                seed,
            )
            store.save(label, settings, row)
        print({k: v for k, v in row.items() if not isinstance(v, dict)}, flush=True)
        return row

    seeds = list(args.seeds)
    unstarted = 0
    if args.report_only:

        def finished(method: str, eq_bits: int, seed: int) -> bool:
            label = "fp32" if method == "fp32" else f"{method}-w{eq_bits}-s{seed}"
            return store.load(label, unit_settings(args, method, eq_bits, seed)) is not None

        kept = [s for s in seeds if finished("fp32", 32, s)]
        done = [u for u in pending if finished(*u)]
        unstarted = len(seeds) - len(kept) + len(pending) - len(done)
        seeds, pending = kept, done
    # The float models first: each is a unit, and every quantised unit of its seed needs it.
    float_rows, left = run_units(seeds, budget, lambda s: float_row(store, args, s, float_model))
    units, left_q = run_units(pending, budget, run_one) if not left else ([], len(pending))
    left += unstarted
    stopped = bool(left or left_q)
    if stopped:
        print(units_left_line(left + left_q, args.report_only), flush=True)
    rows = []
    if float_rows:
        rows += aggregate(float_rows, "accuracy")
    q_rows = aggregate(units, "accuracy", mean_fields=MEAN_FIELDS)
    for row in q_rows:
        row["act_bits"] = 8
    rows += q_rows
    previous = earlier_results(args.output / f"{args.name}.json", args.carry_from)
    agreed = {
        k: v for k, v in result_settings(args, [], False, 0.0).items() if k in AGREED_SETTINGS
    }
    carried, carry_note = carried_rows(
        previous, {(r["method"], r["eq_bits_target"]) for r in rows}, agreed
    )
    rows = sorted(rows + carried, key=lambda r: -r["eq_bits_target"])
    q_rows = [r for r in rows if r["method"] != "fp32"]
    settings = result_settings(args, q_rows, stopped, time.perf_counter() - wall, carry_note)
    args.output.mkdir(parents=True, exist_ok=True)
    path = write_json(args.name, settings, rows, args.output)
    plotted = [r for r in q_rows if r.get("fpga_images_per_s")]
    if plotted:
        from _pareto_plot import pareto_figure

        pareto_figure(
            plotted,
            "accuracy",
            args.output / f"{args.name}.png",
            "MiniLM + linear head, SST-2 dev, A8",
        )
    print(f"wrote {path}" + ("" if settings["complete"] else " (partial)"))
    return 0


def float_row(store: UnitStore, args: argparse.Namespace, seed: int, get: Any) -> dict:
    settings = unit_settings(args, "fp32", 32, seed)
    row = store.load("fp32", settings)
    if row is None:
        get(seed)
        row = store.load("fp32", settings)
    assert row is not None
    print(row, flush=True)
    return row


def fine_tune_float(
    args: argparse.Namespace,
    store: UnitStore,
    encoder: SentenceEncoder,
    tokenizer: Any,
    train_set: Any,
    dev: TokenBatches,
    seed: int,
) -> nn.Module:
    """The float classifier of ``seed``: trained once (resumable), restored from its
    checkpoint afterwards (``train`` with every epoch done only loads it)."""
    settings = unit_settings(args, "fp32", 32, seed)
    unit_dir = store.unit_dir("fp32", settings)
    torch.manual_seed(seed)  # the head's initialisation
    model = SentenceClassifier(_copy_encoder(encoder), hidden=384)
    data = TokenBatches(
        tokenizer,
        train_set.head(args.train_sentences),
        args.batch,
        shuffle=True,
        seed=seed,
        max_length=args.max_length,
    )
    start = time.perf_counter()
    result = train(
        model,
        data,
        float_config(args, seed),
        evaluate=lambda m: {"accuracy": accuracy(m, dev)},
        output_dir=unit_dir / "train",
        resume=True,
        progress=False,
    )
    model.eval()
    trained = result.history[-1].metrics["accuracy"]
    finished = store.load("fp32", settings)
    if finished is not None and finished["accuracy"] != trained:
        # Its finished units (from the ledger) were distilled from the earlier model.
        raise BenchmarkSettingsError(
            f"the float model of seed {seed} retrained to dev accuracy {trained}, not the "
            f"{finished['accuracy']} of the model its finished units were made from; "
            "remove that seed's records from the ledger and the work dir to redo them"
        )
    if finished is None:
        store.save(
            "fp32",
            settings,
            {
                "method": "fp32",
                "eq_bits_target": 32,
                "seed": seed,
                "eq_bits": 32.0,
                "accuracy": trained,
                "train_s_this_chunk": round(time.perf_counter() - start, 1),
            },
        )
    return model


def _copy_encoder(encoder: SentenceEncoder) -> SentenceEncoder:
    import copy

    clone = copy.deepcopy(encoder)
    clone.normalize = False  # the head reads the mean-pooled embedding as it is
    return clone


def run_unit(
    args: argparse.Namespace,
    teacher: nn.Module,
    tokenizer: Any,
    train_set: Any,
    dev: TokenBatches,
    unit_dir: Path,
    method: str,
    eq_bits: int,
    seed: int,
) -> dict[str, Any]:
    start = time.perf_counter()
    unit_dir.mkdir(parents=True, exist_ok=True)
    # QAT sentences follow the float ones, so distillation sees text the teacher was not
    # fitted on; calibration uses the first ones in the seed's order.
    offset = args.train_sentences
    qat_set = dataclasses.replace(
        train_set,
        sentences=train_set.sentences[offset : offset + args.qat_sentences],
        labels=train_set.labels[offset : offset + args.qat_sentences],
    )
    calib_source = TokenBatches(
        tokenizer,
        train_set.head(args.calib_sentences),
        args.batch,
        shuffle=True,
        seed=seed,
        max_length=args.max_length,
    )
    calib = [{k: v for k, v in b.items() if k != "labels"} for b in calib_source]
    model = mixq.quantize(
        teacher,
        method_recipe(method, eq_bits),
        calibration_data=calib,
        calibration_batches=len(calib),
        progress=False,
    )
    ptq = accuracy(model, dev)
    ptq_s = time.perf_counter() - start
    data = TokenBatches(
        tokenizer, qat_set, args.batch, shuffle=True, seed=seed, max_length=args.max_length
    )
    result = train(
        model,
        data,
        qat_config(args, seed),
        teacher=teacher,
        evaluate=lambda m: {"accuracy": accuracy(m, dev)},
        output_dir=unit_dir / "train",
        resume=True,
        progress=False,
    )
    per_epoch = [r.metrics["accuracy"] for r in result.history]
    summary = mixq.describe(model)
    row: dict[str, Any] = {
        "method": row_name(method, eq_bits),
        "eq_bits_target": eq_bits,
        "seed": seed,
        "eq_bits": round(summary.eq_bits, 4),
        "accuracy_ptq": ptq,
        "accuracy": per_epoch[-1],
        "accuracy_per_epoch": per_epoch,
        "model_kib": round(summary.weight_kib, 1),
        "ptq_s": round(ptq_s, 1),
        "unit_s_this_chunk": round(time.perf_counter() - start, 1),
    }
    try:
        shapes = layer_shapes(teacher, calib[0])
        row.update(hardware_figures(model, shapes, act_bits=8))
        row["fpga_note"] = "linear layers only (attention score products not costed)"
    except (HardwareCostError, KeyError, ValueError) as exc:
        row["fpga_note"] = f"not costed: {exc}"
    return row


def result_settings(
    args: argparse.Namespace,
    rows: list[dict],
    stopped: bool,
    wall_s: float,
    carried: dict | None = None,
) -> dict[str, Any]:
    """The settings block; ``carried`` is the note of rows kept from earlier files."""
    levels = sorted({*args.eq_bits, *(carried or {}).get("levels", [])} - {32}, reverse=True)
    convergence = convergence_by_level(rows, levels, len(args.seeds), "accuracy")
    return {
        "model": "all-MiniLM-L6-v2, mean pooling, linear head (Fixed-8)",
        "act_bits": 8,
        "quantised": "every nn.Linear of the encoder at the method's ratio; embeddings, "
        "LayerNorm float",
        "seeds": args.seeds,
        "train_sentences": args.train_sentences,
        "qat_sentences": args.qat_sentences,
        "dev_sentences": args.dev_sentences or "all (6735, a split of GLUE's training set)",
        "calibration_sentences": args.calib_sentences,
        "float": float_config(args, 0).to_dict() | {"seed": "the unit's seed"},
        "qat": qat_config(args, 0).to_dict() | {"seed": "the unit's seed"},
        "max_length": args.max_length,
        "convergence_check": "dev accuracy after every QAT epoch; 'changed': the ranking "
        "of methods by mean differs between the last two epochs",
        "convergence": convergence,
        "eq_bits_levels": levels,
        "units": "one record per finished unit (settings, row) in units/<name>/ beside this file",
        "carried": carried,
        "complete": rows_complete(rows, expected_rows(args.methods, args.eq_bits), len(args.seeds)),
        "units_left_this_chunk": stopped,
        "wall_s_this_chunk": round(wall_s),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


if __name__ == "__main__":
    sys.exit(main())
