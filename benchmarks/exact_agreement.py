"""The deployed integer model against what a user evaluates, on every preset at A4 and A8.

For each model and preset: PTQ (512 calibration images), then top-1 of the float
fake-quantised model and of the deployed integer model (``int8`` engine, which is what
``mixq.integer.evaluate_exact`` runs), the predictions they make differently, and, on the
first ``--reference-images`` images, the predictions and output integers in which the
reference engine and the exact evaluation mode differ from the ``int8`` engine (goal: 0).

    python benchmarks/exact_agreement.py --images 2000
    python benchmarks/exact_agreement.py --models resnet32 --presets msp rmsmp --merge

``--merge`` keeps the rows of the existing result that this run does not measure again
(same model, preset, activation bits and image count) and records the earlier runs'
commands under ``settings.earlier_runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from _common import add_run_options, start_run, write_result

import mixq
from mixq.data import cifar10_loader
from mixq.integer import exact_model
from mixq.models import load_pretrained_cifar_resnet, resnet20, resnet32

PRESETS = ["fixed4", "pot4", "sp2-4", "fixed8", "msp", "rmsmp"]
CHECKPOINTS = {"resnet20": "resnet20-12fca82f.th", "resnet32": "resnet32-d509ac18.th"}
BUILDERS = {"resnet20": resnet20, "resnet32": resnet32}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--reference-images", type=int, default=500)
    parser.add_argument("--calib-images", type=int, default=512)
    parser.add_argument("--models", nargs="+", default=list(CHECKPOINTS))
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--act-bits", nargs="+", type=int, default=[4, 8])
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the existing result's rows that this run does not measure again",
    )
    add_run_options(parser, threads=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    root = start_run(args)
    limit = None if args.images >= 10000 else args.images
    test = list(cifar10_loader(root / "cifar10-jpeg", "test", 250, limit=limit))
    calib = list(cifar10_loader(root / "cifar10-jpeg", "train", 64, limit=args.calib_images))
    earlier_rows, earlier_runs = _earlier(args.output / "exact_agreement.json", args.merge)
    rows: list[dict[str, Any]] = []
    for name in args.models:
        model = load_pretrained_cifar_resnet(
            BUILDERS[name](), root / "resnet-cifar10" / CHECKPOINTS[name]
        ).eval()
        for preset in args.presets:
            for act_bits in args.act_bits:
                rows.append(_row(model, name, preset, act_bits, calib, test, args))
                print(rows[-1], flush=True)
                # Written after every row, so a long run leaves what it measured.
                settings = {
                    "images": sum(len(y) for _, y in test),
                    "reference_images": args.reference_images,
                    "calibration_images": args.calib_images,
                    "first_last": "fixed-8",
                    "load_avg": os.getloadavg(),
                    "earlier_runs": earlier_runs,
                }
                measured = {_key(row) for row in rows}
                kept = [row for row in earlier_rows if _key(row) not in measured]
                path = write_result("exact_agreement", settings, kept + rows, args.output)
    print(f"wrote {path}")


def _key(row: dict[str, Any]) -> tuple[str, str, int, int]:
    return (row["model"], row["preset"], int(row["act_bits"]), int(row["images"]))


def _earlier(path: Path, merge: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows and run records of the result at ``path`` to keep (none without --merge)."""
    if not merge or not path.exists():
        return [], []
    earlier = json.loads(path.read_text())
    runs = earlier["settings"].pop("earlier_runs", [])
    record = {k: earlier[k] for k in ("command", "created", "environment", "settings")}
    return earlier["rows"], [*runs, record]


@torch.no_grad()
def _row(
    model: torch.nn.Module,
    name: str,
    preset: str,
    act_bits: int,
    calib: list,
    test: list,
    args: argparse.Namespace,
) -> dict[str, Any]:
    start = time.perf_counter()
    recipe = mixq.Recipe.preset(preset, act_bits=act_bits)
    quantized = mixq.quantize(
        model, recipe, calibration_data=calib, calibration_batches=len(calib), progress=False
    ).eval()
    example = test[0][0][:1]
    int8 = mixq.to_integer(quantized, example, engine="int8")
    reference = mixq.to_integer(quantized, example, engine="reference")
    exact = exact_model(quantized, example, engine="reference").eval()
    fake_correct = deployed_correct = disagreements = seen = 0
    reference_seen = reference_predictions = reference_integers = exact_predictions = 0
    for images, labels in test:
        fake = quantized(images).argmax(1)
        integers = int8.forward_integer(images)
        deployed = integers.argmax(1)
        fake_correct += int((fake == labels).sum())
        deployed_correct += int((deployed == labels).sum())
        disagreements += int((fake != deployed).sum())
        seen += len(labels)
        if reference_seen < args.reference_images:
            ref_integers = reference.forward_integer(images)
            reference_integers += int((ref_integers != integers).any(1).sum())
            reference_predictions += int((ref_integers.argmax(1) != deployed).sum())
            exact_predictions += int((exact(images).argmax(1) != deployed).sum())
            reference_seen += len(labels)
    return {
        "model": name,
        "preset": preset,
        "act_bits": act_bits,
        "eq_bits": round(mixq.describe(quantized).eq_bits, 4),
        "images": seen,
        "top1_fake_quant": fake_correct / seen,
        "top1_deployed": deployed_correct / seen,
        "fake_quant_vs_deployed_disagreements": disagreements,
        "reference_images": reference_seen,
        "reference_vs_int8_prediction_disagreements": reference_predictions,
        "reference_vs_int8_differing_outputs": reference_integers,
        "exact_mode_vs_int8_prediction_disagreements": exact_predictions,
        "seconds": round(time.perf_counter() - start, 1),
    }


if __name__ == "__main__":
    main()
