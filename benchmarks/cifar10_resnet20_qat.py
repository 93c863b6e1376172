"""QAT of the pretrained ResNet-20 on the CIFAR-10 JPEG images, every method, W4-equivalent A4.

First the float model is adapted to the JPEG images (the float baseline); then each method
is quantised from that baseline (PTQ with GPTQ rounding) and fine-tuned with the same short
budget: SGD, warm-up and cosine, logit distillation from the float baseline. The first and
last layers stay Fixed-8 with 8-bit inputs in every method.

    python benchmarks/cifar10_resnet20_qat.py --adapt-epochs 3 --qat-epochs 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import add_run_options, resnet20_qat_config, start_run, top1, write_result

import mixq
from mixq.data import cifar10_loader
from mixq.models import load_pretrained_cifar_resnet, resnet20
from mixq.train import TrainConfig, train

METHODS = [("fixed4", "fixed4"), ("sp2-4", "sp2-4"), ("msp", "msp"), ("rmsmp", "rmsmp")]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapt-epochs", type=int, default=3)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--act-bits", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--train-images", type=int, default=None, help="limit (default all)")
    parser.add_argument("--methods", nargs="*", default=[m for m, _ in METHODS])
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("runs/cifar10_resnet20_qat"),
        help="checkpoints (runs resume from here if killed)",
    )
    add_run_options(parser, threads=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    root = start_run(args)
    cifar = root / "cifar10-jpeg"
    train_loader = cifar10_loader(
        cifar, "train", args.batch, train_augment=True, shuffle=True, limit=args.train_images
    )
    test_loader = cifar10_loader(cifar, "test", 500)
    calib = list(cifar10_loader(cifar, "train", 64, limit=512))

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return {"top1": top1(model, test_loader)}

    base = load_pretrained_cifar_resnet(
        resnet20(), root / "resnet-cifar10" / "resnet20-12fca82f.th"
    )
    pretrained_top1 = top1(base, test_loader)
    adapt = TrainConfig(
        epochs=args.adapt_epochs, lr=0.02, warmup_epochs=0.2, bn_batch_stats=True, weight_decay=5e-4
    )
    start = time.perf_counter()
    train(
        base, train_loader, adapt, evaluate=evaluate, output_dir=args.work_dir / "fp32", resume=True
    )
    rows = [
        {
            "method": "fp32",
            "eq_bits": 32.0,
            "top1": top1(base, test_loader),
            "pretrained_top1": pretrained_top1,
            "train_s": round(time.perf_counter() - start),
        }
    ]
    print(rows[-1], flush=True)
    base.eval()
    qat = resnet20_qat_config(args.qat_epochs)
    for method, preset in METHODS:
        if method not in args.methods:
            continue
        recipe = mixq.Recipe.preset(preset, act_bits=args.act_bits)
        model = mixq.quantize(base, recipe, calibration_data=calib, calibration_batches=len(calib))
        ptq = top1(model, test_loader)
        start = time.perf_counter()
        train(
            model,
            train_loader,
            qat,
            teacher=base,
            evaluate=evaluate,
            output_dir=args.work_dir / method,
            resume=True,
        )
        summary = mixq.describe(model)
        rows.append(
            {
                "method": f"{method}-a{args.act_bits}",
                "eq_bits": round(summary.eq_bits, 3),
                "top1": top1(model, test_loader),
                "top1_ptq": ptq,
                "weight_kib": round(summary.weight_kib, 1),
                "train_s": round(time.perf_counter() - start),
            }
        )
        print(rows[-1], flush=True)
    settings = {
        "act_bits": args.act_bits,
        "first_last": "fixed-8 with 8-bit inputs",
        "adapt": adapt.to_dict(),
        "qat": qat.to_dict(),
        "batch": args.batch,
        "train_images": args.train_images or 50000,
        "test_images": 10000,
        "calibration_images": 512,
        "model": "resnet20",
    }
    print(f"wrote {write_result('cifar10_resnet20_qat', settings, rows, args.output)}")


if __name__ == "__main__":
    main()
