"""``mixq demo``: the whole story on Fashion-MNIST in a few minutes on a laptop CPU.

    mixq demo                 # writes ./mixq-demo
    mixq demo --act-bits 8 --epochs 3 -o demo-a8

1. Finds Fashion-MNIST (/usr/share/datasets/fashion-mnist from the Debian package
   dataset-fashion-mnist, else ~/.cache/mixq/fashion-mnist, else downloads it there).
2. Trains a small CNN in float.
3. Quantises it with each method (Fixed-4, SP2-4, MSP, RMSMP by default) at the same
   activation bits, the first and last layers at Fixed-8, and measures top-1 (PTQ).
4. Fine-tunes each briefly, distilling the float model's logits, and measures again.
5. Prints the table and writes ``demo.json`` (rows: method, eq_bits, weight_kib,
   top1_ptq, top1), ``demo.png`` (accuracy against equivalent bits), ``float.pt`` and
   ``<method>/quantized.safetensors`` (see them with ``mixq report``).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import mixq
from mixq.checkpoint import save_quantized
from mixq.cli._common import QUANTIZED_NAME, add_command, positive_int, resolve_device
from mixq.cli._plots import draw_or_warn, plot_accuracy_bits
from mixq.cli._results import ResultFile
from mixq.cli._zoo import Batches, ModelSpec, get_model, save_float_weights, top1
from mixq.recipe import PRESET_RATIOS, Recipe
from mixq.summary import fp32_weight_kib
from mixq.train import TrainConfig, train

log = logging.getLogger("mixq")

MODEL = "small-cnn-w16"
METHODS = ("fixed4", "sp2-4", "msp", "rmsmp")

SUMMARY = (  # the line in `mixq --help`
    "train a small CNN on Fashion-MNIST, quantise it every way, fine-tune, compare"
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_command(subparsers, common, "demo", __doc__, help=SUMMARY)
    parser.add_argument("--epochs", type=positive_int, default=4, help="float training epochs")
    parser.add_argument(
        "--train-images", type=positive_int, default=60000, help="float training subset"
    )
    parser.add_argument("--qat-epochs", type=positive_int, default=1)
    parser.add_argument(
        "--qat-images", type=positive_int, default=20000, help="fine-tuning subset per method"
    )
    parser.add_argument("--test-images", type=positive_int, help="test subset (default all)")
    parser.add_argument("--calib-images", type=positive_int, default=256)
    parser.add_argument("--act-bits", type=int, default=4, help="activation bits of every method")
    parser.add_argument(
        "--methods",
        type=_methods,
        default=METHODS,
        help=f"comma-separated presets (default {','.join(METHODS)})",
    )
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, help="folder of the *-ubyte.gz files")
    parser.set_defaults(handler=run, outputs=planned_outputs, output="mixq-demo")


def planned_outputs(args: argparse.Namespace) -> list[Path]:
    out = Path(args.output)
    files = [out / "float.pt", out / "demo.json", out / "demo.png"]
    return files + [out / method / QUANTIZED_NAME for method in args.methods]


def _methods(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in PRESET_RATIOS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {unknown}; presets: {', '.join(PRESET_RATIOS)}"
        )
    return names


def float_config(args: argparse.Namespace) -> TrainConfig:
    # Batch statistics: the model learns from scratch, its BN running statistics mean nothing.
    return TrainConfig(
        epochs=args.epochs, lr=0.1, warmup_epochs=0.2, bn_batch_stats=True, seed=args.seed
    )


def qat_config(args: argparse.Namespace) -> TrainConfig:
    # AdamW: the distillation gradients of a folded, quantised net vary in scale from layer
    # to layer; SGD at the float model's rates diverged here, AdamW at 1e-3 did not.
    return TrainConfig(
        epochs=args.qat_epochs,
        lr=1e-3,
        optimizer="adamw",
        weight_decay=0.0,
        warmup_epochs=0.1,
        distill="logits",
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = Path(args.output)
    # Every recipe is built before the float training, so a bad option fails in a second.
    recipes = {method: Recipe.preset(method, act_bits=args.act_bits) for method in args.methods}
    device = resolve_device(args.torch_device)
    spec = get_model(MODEL)
    progress = not args.quiet
    test = spec.loader("test", 500, root=args.data_dir, limit=args.test_images)
    model, rows = _float_model(args, spec, test, out, progress, device)
    calibration = list(
        spec.loader("train", args.batch_size, root=args.data_dir, limit=args.calib_images)
    )
    fine_tune = spec.train_loader(
        args.batch_size,
        root=args.data_dir,
        limit=args.qat_images,
        seed=args.seed + 1,  # another subset than the float training's first images
    )
    for method in args.methods:
        rows.append(
            _quantize_and_tune(args, recipes[method], method, model, calibration, fine_tune, test)
        )
        log.info("%s", format_row(rows[-1]))
    wall = time.perf_counter() - start
    print(format_table(rows))
    print(f"wall time {wall:.0f} s on {torch.get_num_threads()} threads")
    _write(args, rows, wall, len(test.dataset))  # type: ignore[arg-type]
    print(f"next: mixq report {out / args.methods[-1] / QUANTIZED_NAME} --results {out}/demo.json")
    return 0


def _float_model(
    args: argparse.Namespace,
    spec: ModelSpec,
    test: Batches,
    out: Path,
    progress: bool,
    device: torch.device,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    log.info("training %s in float on Fashion-MNIST", spec.name)
    seconds = time.perf_counter()
    torch.manual_seed(args.seed)
    model = spec.build().to(device)
    data = spec.train_loader(
        args.batch_size, root=args.data_dir, limit=args.train_images, seed=args.seed
    )
    train(model, data, float_config(args), progress=progress)
    seconds = time.perf_counter() - seconds
    model.eval()
    save_float_weights(model, out / "float.pt")
    row = {
        "method": "fp32",
        "eq_bits": 32.0,
        "top1": top1(model, test),
        "weight_kib": round(fp32_weight_kib(model), 2),
        "train_s": round(seconds, 1),
    }
    log.info("%s", format_row(row))
    return model, [row]


def _quantize_and_tune(
    args: argparse.Namespace,
    recipe: Recipe,
    method: str,
    model: nn.Module,
    calibration: list[Any],
    fine_tune: Batches,
    test: Batches,
) -> dict[str, Any]:
    log.info("%s: quantising and fine-tuning", method)
    out = Path(args.output)
    seconds = time.perf_counter()
    quantized = mixq.quantize(
        model,
        recipe,
        calibration_data=calibration,
        calibration_batches=len(calibration),
        progress=False,
    )
    ptq = top1(quantized, test)
    folder = out / method
    train(
        quantized,
        fine_tune,
        qat_config(args),
        teacher=model,
        output_dir=folder,
        progress=not args.quiet,
    )
    accuracy = top1(quantized, test)
    seconds = time.perf_counter() - seconds
    name = f"{method}-a{args.act_bits}"
    extra = {
        "model": MODEL,
        "method": name,
        "recipe": recipe.to_dict(),
        "float_weights": str((out / "float.pt").resolve()),
        "top1": accuracy,
    }
    save_quantized(quantized, folder / QUANTIZED_NAME, extra=extra)
    summary = mixq.describe(quantized)
    return {
        "method": name,
        "ratio": recipe.default.ratio.to_dict(),
        "eq_bits": round(summary.eq_bits, 4),
        "weight_kib": round(summary.weight_kib, 2),
        "top1_ptq": ptq,
        "top1": accuracy,
        "quantize_and_tune_s": round(seconds, 1),
    }


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], wall: float, images: int) -> None:
    out = Path(args.output)
    settings = {
        "model": MODEL,
        "data": "Fashion-MNIST",
        "act_bits": args.act_bits,
        "first_last_bits": 8,
        "float_training": {**float_config(args).to_dict(), "images": args.train_images},
        "fine_tuning": {**qat_config(args).to_dict(), "images": args.qat_images},
        "calibration_images": args.calib_images,
        "test_images": images,
        "batch_size": args.batch_size,
        "wall_s": round(wall, 1),
        "runs": 1,
    }
    ResultFile.new("mixq_demo", _command(args), settings, rows).save(out / "demo.json")
    title = f"Fashion-MNIST, {MODEL}, A{args.act_bits}: top-1 before and after fine-tuning"
    series = [("mixq demo", rows)]
    draw_or_warn(lambda: plot_accuracy_bits(series, out / "demo.png", title=title))
    log.info("wrote %s and %s", out / "demo.json", out / "demo.png")


def _command(args: argparse.Namespace) -> str:
    parts = [
        "mixq demo",
        f"--epochs {args.epochs}",
        f"--train-images {args.train_images}",
        f"--qat-epochs {args.qat_epochs}",
        f"--qat-images {args.qat_images}",
        f"--calib-images {args.calib_images}",
        f"--act-bits {args.act_bits}",
        f"--methods {','.join(args.methods)}",
        f"--batch-size {args.batch_size}",
        f"--seed {args.seed}",
    ]
    if args.test_images is not None:
        parts.append(f"--test-images {args.test_images}")
    return " ".join(parts)


def format_row(row: dict[str, Any]) -> str:
    ptq = f"{100 * row['top1_ptq']:6.2f}" if "top1_ptq" in row else f"{'-':>6s}"
    return (
        f"{row['method']:<12s} {row['eq_bits']:>7.3f} {row['weight_kib']:>9.2f} "
        f"{ptq} {100 * row['top1']:>12.2f}"
    )


def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'method':<12s} {'eq bits':>7s} {'size KiB':>9s} {'PTQ %':>6s} {'fine-tuned %':>12s}"
    return "\n".join([head, "-" * len(head), *(format_row(row) for row in rows)])
