"""Integer-only ResNet-20 on the CIFAR-10 JPEG test set: agreement with the fake-quantised
model, packed size, and CPU throughput of every engine.

The pretrained ResNet-20 is quantised with RMSMP (PTQ, GPTQ rounding, first and last layer
Fixed-8 with 8-bit inputs) and converted with ``mixq.to_integer``. Agreement rows count the
test images whose prediction differs from the fake-quantised model's, per engine, and the
input levels that differ when each layer is fed the fake-quantised model's levels
(teacher-forced) or runs on its own (free-running). Throughput rows time float eager, the
fake-quantised model, the integer reference engine (int64, PoT/SP2 rows as shift-adds),
the int8 path (oneDNN int8 GEMM) and onnxruntime on the exported ONNX, at batch 1 and 64,
in alternating rounds so that every engine sees the same machine load.

    python benchmarks/integer_engine.py --act-bits 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import add_run_options, start_run, write_result

import mixq
from mixq.data import cifar10_loader
from mixq.integer.agreement import compare_layers
from mixq.integer.onnx_export import export_onnx, onnx_session, run_onnx
from mixq.integer.packed import packed_size, save_packed
from mixq.models import load_pretrained_cifar_resnet, resnet20

Predict = Callable[[torch.Tensor], torch.Tensor]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000, help="test images (max 10000)")
    parser.add_argument("--calib-images", type=int, default=512)
    parser.add_argument("--act-bits", type=int, default=4)
    parser.add_argument("--layer-images", type=int, default=1000, help="for layer agreement")
    parser.add_argument("--runs", type=int, default=5, help="timing rounds (median)")
    add_run_options(parser, threads=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    root = start_run(args)
    model = load_pretrained_cifar_resnet(
        resnet20(), root / "resnet-cifar10" / "resnet20-12fca82f.th"
    ).eval()
    limit = None if args.images >= 10000 else args.images
    test = list(cifar10_loader(root / "cifar10-jpeg", "test", 250, limit=limit))
    calib = list(cifar10_loader(root / "cifar10-jpeg", "train", 64, limit=args.calib_images))
    recipe = mixq.Recipe.preset("rmsmp", act_bits=args.act_bits)
    start = time.perf_counter()
    quantized = mixq.quantize(
        model, recipe, calibration_data=calib, calibration_batches=len(calib), progress=False
    ).eval()
    print(f"quantised in {time.perf_counter() - start:.0f} s", flush=True)
    example = test[0][0][:1]
    engines = _engines(model, quantized, example)
    print(f"converted and exported in {time.perf_counter() - start:.0f} s", flush=True)
    rows = _agreement_rows(engines, test)
    rows += _layer_rows(quantized, engines, test, args.layer_images)
    rows.append(_size_row(engines))
    rows += _throughput_rows(engines, test[0][0], args.runs)
    summary = mixq.describe(quantized)
    settings = {
        "model": "resnet20",
        "method": "rmsmp",
        "act_bits": args.act_bits,
        "first_last_bits": 8,
        "eq_bits": round(summary.eq_bits, 4),
        "images": sum(len(y) for _, y in test),
        "calibration_images": args.calib_images,
        "layer_agreement_images": args.layer_images,
        "runs": args.runs,
        "fine_bits": mixq.integer.FINE_BITS,
    }
    path = write_result("integer_engine", settings, rows, args.output)
    print(f"wrote {path}")


def _engines(model: torch.nn.Module, quantized: torch.nn.Module, example: torch.Tensor) -> dict:
    reference = mixq.to_integer(quantized, example, engine="reference")
    int8 = mixq.to_integer(quantized, example, engine="int8")
    folder = Path(tempfile.mkdtemp())
    export_onnx(reference, example, folder / "resnet20.onnx")
    save_packed(reference, folder / "resnet20.packed.safetensors")
    session = onnx_session(folder / "resnet20.onnx", threads=torch.get_num_threads())
    return {
        "fp32": model,
        "fake-quant": quantized,
        "integer-reference": reference,
        "integer-int8": int8,
        "onnxruntime": session,
        "_folder": folder,
    }


def _predictor(engine: Any) -> Predict:
    if isinstance(engine, torch.nn.Module):
        return engine
    return lambda x: run_onnx(engine, x)


@torch.no_grad()
def _agreement_rows(engines: dict, test: list) -> list[dict[str, Any]]:
    names = ["fp32", "fake-quant", "integer-reference", "integer-int8", "onnxruntime"]
    correct = dict.fromkeys(names, 0)
    disagreements = dict.fromkeys(names, 0)
    seconds = dict.fromkeys(names, 0.0)
    total = 0
    for images, labels in test:
        predicted = {}
        for name in names:
            start = time.perf_counter()
            predicted[name] = _predictor(engines[name])(images).argmax(1)
            seconds[name] += time.perf_counter() - start
        for name in names:
            correct[name] += int((predicted[name] == labels).sum())
            disagreements[name] += int((predicted[name] != predicted["fake-quant"]).sum())
        total += len(labels)
        print(f"{total} images: " + ", ".join(f"{n} {correct[n] / total:.4f}" for n in names))
    return [
        {
            "kind": "agreement",
            "engine": name,
            "top1": correct[name] / total,
            "disagreements": disagreements[name] if name != "fp32" else None,
            "eval_s": round(seconds[name], 1),
        }
        for name in names
    ]


def _layer_rows(quantized: torch.nn.Module, engines: dict, test: list, images: int) -> list:
    batches = [x for x, _ in test][: max(1, images // 250)]
    rows = []
    for forced in (True, False):
        reference = engines["integer-reference"]
        layers = compare_layers(quantized, reference, batches, teacher_forced=forced)
        elements = sum(layer.elements for layer in layers)
        mismatches = sum(layer.mismatches for layer in layers)
        rows.append(
            {
                "kind": "layer_agreement",
                "engine": "integer-reference",
                "teacher_forced": forced,
                "levels": elements,
                "mismatched_levels": mismatches,
                "mismatch_rate": mismatches / elements,
                "max_abs_diff": max(layer.max_abs_diff for layer in layers),
                "per_layer": {layer.name: layer.mismatches for layer in layers},
            }
        )
        print(rows[-1])
    return rows


def _size_row(engines: dict) -> dict[str, Any]:
    size = packed_size(engines["integer-reference"])
    file = engines["_folder"] / "resnet20.packed.safetensors"
    return {
        "kind": "size",
        "packed_weight_bytes": size.weight_bytes,
        "float_weight_bytes": size.float_weight_bytes,
        "other_bytes": size.other_bytes,
        "file_bytes": file.stat().st_size,
        "onnx_file_bytes": (engines["_folder"] / "resnet20.onnx").stat().st_size,
        "compression_ratio": round(size.float_weight_bytes / size.weight_bytes, 3),
    }


@torch.no_grad()
def _throughput_rows(engines: dict, images: torch.Tensor, runs: int) -> list[dict[str, Any]]:
    names = ["fp32", "fake-quant", "integer-reference", "integer-int8", "onnxruntime"]
    rows = []
    for batch, calls in ((1, 64), (64, 4)):
        x = images[:batch]
        timings: dict[str, list[float]] = {name: [] for name in names}
        for name in names:
            _predictor(engines[name])(x)  # warm-up
        for _ in range(runs):
            for name in names:  # alternating rounds: every engine sees the same load
                predict = _predictor(engines[name])
                start = time.perf_counter()
                for _ in range(calls):
                    predict(x)
                timings[name].append((time.perf_counter() - start) / (calls * batch))
        base = statistics.median(timings["fp32"])
        for name in names:
            per_image = statistics.median(timings[name])
            rows.append(
                {
                    "kind": "throughput",
                    "engine": name,
                    "batch": batch,
                    "images_per_s": round(1.0 / per_image, 1),
                    "speedup_vs_fp32_ratio": round(base / per_image, 3),
                }
            )
            print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main()
