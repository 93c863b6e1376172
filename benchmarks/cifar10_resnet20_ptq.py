"""Post-training quantisation of the pretrained ResNet-20 on the CIFAR-10 JPEG test set.

Every method at the same activation bits (8) with the first and last layer at 8 bits; weights
per row. Each method is measured twice: with mixq's default error-feedback rounding (GPTQ
on the calibration batches) and with plain round-to-nearest (suffix ``-rtn``), which is
what the Brevitas and per-row RTN baselines use.

    python benchmarks/cifar10_resnet20_ptq.py --images 10000
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from _common import add_run_options, start_run, top1, write_result

import mixq
from mixq.data import cifar10_loader
from mixq.models import load_pretrained_cifar_resnet, resnet20
from mixq.summary import fp32_weight_kib

# (row name, preset, scheme rule)
METHODS = [
    ("fixed4", "fixed4", "variance"),
    ("pot4", "pot4", "variance"),
    ("sp2-4", "sp2-4", "variance"),
    ("msp", "msp", "variance"),
    ("rmsmp", "rmsmp", "variance"),
    ("rmsmp-error", "rmsmp", "error"),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000, help="test images (max 10000)")
    parser.add_argument(
        "--calib-images",
        type=int,
        default=512,
        help="training images used for calibration and rounding",
    )
    parser.add_argument("--act-bits", type=int, default=8)
    add_run_options(parser, threads=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    root = start_run(args)
    model = load_pretrained_cifar_resnet(
        resnet20(), root / "resnet-cifar10" / "resnet20-12fca82f.th"
    )
    limit = None if args.images >= 10000 else args.images
    test = cifar10_loader(root / "cifar10-jpeg", "test", 500, limit=limit)
    calib = list(cifar10_loader(root / "cifar10-jpeg", "train", 64, limit=args.calib_images))
    rows = [
        {
            "method": "fp32",
            "eq_bits": 32.0,
            "top1": top1(model, test),
            "weight_kib": round(fp32_weight_kib(model), 1),
        }
    ]
    print(_format(rows[-1]))
    for rounding, suffix in (("gptq", ""), ("nearest", "-rtn")):
        for method, preset, rule in METHODS:
            recipe = dataclasses.replace(
                mixq.Recipe.preset(preset, act_bits=args.act_bits, scheme_rule=rule),
                weight_rounding=rounding,
            )
            start = time.perf_counter()
            quantized = mixq.quantize(
                model,
                recipe,
                calibration_data=calib,
                calibration_batches=len(calib),
                progress=False,
            )
            seconds = time.perf_counter() - start
            summary = mixq.describe(quantized)
            rows.append(
                {
                    "method": method + suffix,
                    "rounding": rounding,
                    "top1": top1(quantized, test),
                    "eq_bits": round(summary.eq_bits, 3),
                    "weight_kib": round(summary.weight_kib, 1),
                    "ratio": recipe.default.ratio.to_dict(),
                    "quantize_s": round(seconds, 2),
                }
            )
            print(_format(rows[-1]), flush=True)
    settings = {
        "act_bits": args.act_bits,
        "first_last_bits": 8,
        "images": args.images,
        "calibration_images": args.calib_images,
        "model": "resnet20",
        "weights": "per row",
        "fine_tuning": None,
    }
    path = write_result("cifar10_resnet20_ptq", settings, rows, args.output)
    _plot(rows, path.with_suffix(".png"))
    print(f"wrote {path}")


def _format(row: dict) -> str:
    return (
        f"{row['method']:<16} top1 {row['top1']:.4f}  eq_bits {row['eq_bits']:>6.3f}  "
        f"weight {row['weight_kib']:>7.1f} KiB"
    )


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    names = [r["method"] for r in rows]
    colors = [
        "gray"
        if r["method"] == "fp32"
        else ("tab:blue" if not r["method"].endswith("-rtn") else "tab:orange")
        for r in rows
    ]
    ax.bar(range(len(rows)), [100 * r["top1"] for r in rows], color=colors)
    ax.set_xticks(range(len(rows)), names, rotation=45, ha="right")
    ax.set_ylim(60, 85)
    ax.set_ylabel("top-1 (%)")
    ax.set_title("ResNet-20, CIFAR-10 JPEG, PTQ W4-equivalent A8 (blue: GPTQ, orange: RTN)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
