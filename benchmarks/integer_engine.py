"""Integer-only ResNet-20 (and ResNet-32) on CIFAR-10: CPU throughput of every engine
against onnxruntime's own int8 quantisation of the same float network, and agreement of the
deployed integer model with the model the user evaluated.

Throughput rows (``kind: throughput``), all timed in one run, in alternating rounds so that
every engine sees the same machine load, at each batch size and thread count:

- ``fp32``: torch eager float; ``ort-fp32``: onnxruntime on the float ONNX export;
- ``ort-int8-peer``: ``onnxruntime.quantization.quantize_static`` of the float ONNX (QDQ,
  per-channel int8 weights, uint8 activations, ``--calib-images`` CIFAR train images);
- ``mixq-reference``, ``mixq-int8``, ``mixq-fast``: mixq's integer engines on the RMSMP
  model (``--act-bits``); ``mixq-qdq-ort``: mixq's QDQ export in onnxruntime, where
  ``mixq.export`` provides it.

``speedup_vs_fp32_ratio`` divides each engine's images/s by fp32's in the same rounds.
With ``--agreement``, rows per preset at A4 and A8 (``kind: agreement``): top-1 of the
float fake-quantised model and of the deployed model on the fast engine; ``disagreements``,
the predictions of the deployed model that differ from the exact mode's (the model a user
evaluates, ``mixq.integer.exact_model``), with the images whose output integers differ;
and the predictions that differ from float fake-quant.

    python benchmarks/integer_engine.py                      # timing only, a few minutes
    python benchmarks/integer_engine.py --agreement --models resnet20 resnet32
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import add_run_options, start_run, write_result
from torch import nn

import mixq
from mixq.data import cifar10_loader
from mixq.models import load_pretrained_cifar_resnet, resnet20, resnet32

Predict = Callable[[torch.Tensor], Any]
WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet32": "resnet32-d509ac18.th"}
BUILDERS = {"resnet20": resnet20, "resnet32": resnet32}
PRESETS = ("fixed4", "pot4", "sp2-4", "fixed8", "msp", "rmsmp")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20"], choices=list(WEIGHTS))
    parser.add_argument("--act-bits", type=int, default=4, help="of the timed mixq model")
    parser.add_argument("--calib-images", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--thread-counts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=5, help="timing rounds (median)")
    parser.add_argument("--seconds", type=float, default=0.5, help="per engine and round")
    parser.add_argument("--reference-timing", action="store_true", help="time the slow one")
    parser.add_argument("--agreement", action="store_true", help="agreement rows per preset")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--images", type=int, default=10000, help="agreement test images")
    add_run_options(parser, threads=1)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    root = start_run(args)
    rows: list[dict[str, Any]] = []
    settings = {
        "method": "rmsmp",
        "act_bits": args.act_bits,
        "first_last_bits": 8,
        "calibration_images": args.calib_images,
        "runs": args.runs,
        "seconds_per_round": args.seconds,
        "load_average_start": os.getloadavg(),
    }
    for name in args.models:
        float_model = load_pretrained_cifar_resnet(
            BUILDERS[name](), root / "resnet-cifar10" / WEIGHTS[name]
        ).eval()
        calib = list(cifar10_loader(root / "cifar10-jpeg", "train", 64, limit=args.calib_images))
        test_batch = next(iter(cifar10_loader(root / "cifar10-jpeg", "test", 64, limit=64)))[0]
        engines = build_engines(float_model, calib, test_batch, args)
        rows += [{"model": name, **row} for row in throughput_rows(engines, test_batch, args)]
        if args.agreement:
            test = list(cifar10_loader(root / "cifar10-jpeg", "test", 250, limit=args.images))
            for row in agreement_rows(float_model, calib, test, args):
                rows.append({"model": name, **row})
                print(rows[-1], flush=True)
    settings["load_average_end"] = os.getloadavg()
    path = write_result("integer_engine", settings, rows, args.output)
    print(f"wrote {path}")


def quantize(model: nn.Module, calib: list, preset: str, act_bits: int) -> nn.Module:
    recipe = mixq.Recipe.preset(preset, act_bits=act_bits)
    images = [x for x, _ in calib]
    return mixq.quantize(
        model, recipe, calibration_data=images, calibration_batches=len(images), progress=False
    ).eval()


# -- engines ------------------------------------------------------------------------------


def build_engines(
    model: nn.Module, calib: list, example: torch.Tensor, args: argparse.Namespace
) -> dict[str, dict[int, Predict]]:
    """Per engine, per thread count, a predictor (onnxruntime sessions are per thread
    count; torch engines read ``torch.set_num_threads`` when called)."""
    start = time.perf_counter()
    quantized = quantize(model, calib, "rmsmp", args.act_bits)
    one = example[:1]
    reference = mixq.to_integer(quantized, one, engine="reference")
    from mixq.integer.fast import lower

    torch_engines: dict[str, Predict] = {
        "fp32": model,
        "mixq-int8": mixq.to_integer(quantized, one, engine="int8").forward_integer,
        "mixq-fast": lower(reference).forward_integer,
    }
    if args.reference_timing:
        torch_engines["mixq-reference"] = reference.forward_integer
    folder = Path(tempfile.mkdtemp())
    float_path = export_float_onnx(model, one, folder / "float.onnx")
    peer_path = ort_int8_peer(float_path, calib, folder / "peer-int8.onnx")
    onnx_files = {"ort-fp32": float_path, "ort-int8-peer": peer_path}
    qdq = mixq_qdq_export(reference, quantized, one, folder / "mixq-qdq.onnx")
    if qdq is not None:
        onnx_files["mixq-qdq-ort"] = qdq
    engines: dict[str, dict[int, Predict]] = {}
    for name, predict in torch_engines.items():
        engines[name] = dict.fromkeys(args.thread_counts, predict)
    for name, file in onnx_files.items():
        engines[name] = {t: ort_predictor(file, t) for t in args.thread_counts}
    print(f"engines built in {time.perf_counter() - start:.0f} s: {list(engines)}", flush=True)
    return engines


def export_float_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    torch.onnx.export(
        model, (example,), str(path), dynamo=False, opset_version=17,
        input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
    )  # fmt: skip
    return path


def ort_int8_peer(float_path: Path, calib: list, path: Path) -> Path:
    """onnxruntime's own static quantisation: QDQ, per-channel int8 weights, uint8
    activations, calibrated on the same images mixq calibrates on."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[torch.Tensor] = iter(x for x, _ in calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"x": batch.numpy()}

    prepared = path.with_suffix(".pre.onnx")
    quant_pre_process(str(float_path), str(prepared))
    quantize_static(
        str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return path


def mixq_qdq_export(
    reference: nn.Module, quantized: nn.Module, example: torch.Tensor, path: Path
) -> Path | None:
    """mixq's standard QDQ ONNX, where ``mixq.export`` provides ``export_qdq``."""
    try:
        from mixq.export import export_qdq  # type: ignore[attr-defined]
    except ImportError:
        print("mixq.export.export_qdq not available: no mixq-qdq-ort rows", flush=True)
        return None
    try:
        export_qdq(reference, example, path)
    except TypeError:
        export_qdq(quantized, example, path)
    return path


def ort_predictor(path: Path, threads: int) -> Predict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


# -- throughput ---------------------------------------------------------------------------


@torch.no_grad()
def throughput_rows(
    engines: dict[str, dict[int, Predict]], images: torch.Tensor, args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows = []
    for threads in args.thread_counts:
        torch.set_num_threads(threads)
        for batch in args.batches:
            x = images[:batch].contiguous()
            calls = {
                name: calls_per_round(p[threads], x, args.seconds) for name, p in engines.items()
            }
            timings: dict[str, list[float]] = {name: [] for name in engines}
            cpu: dict[str, list[float]] = {name: [] for name in engines}
            for _ in range(args.runs):
                for name, per_thread in engines.items():  # alternating rounds
                    predict = per_thread[threads]
                    start, start_cpu = time.perf_counter(), time.process_time()
                    for _ in range(calls[name]):
                        predict(x)
                    count = calls[name] * batch
                    timings[name].append((time.perf_counter() - start) / count)
                    cpu[name].append((time.process_time() - start_cpu) / count)
            base = statistics.median(timings["fp32"])
            for name in engines:
                per_image = statistics.median(timings[name])
                rows.append(
                    {
                        "kind": "throughput",
                        "engine": name,
                        "batch": batch,
                        "threads": threads,
                        "images_per_s": round(1.0 / per_image, 1),
                        "speedup_vs_fp32_ratio": round(base / per_image, 3),
                        # CPU time of this process (all its threads): less sensitive to
                        # other processes' load than wall time on a shared machine.
                        "cpu_ms_per_image": round(statistics.median(cpu[name]) * 1e3, 4),
                        "load_average": round(os.getloadavg()[0], 2),
                    }
                )
                print(rows[-1], flush=True)
    return rows


def calls_per_round(predict: Predict, x: torch.Tensor, seconds: float) -> int:
    predict(x)  # warm-up (and the one-off kernel build)
    start = time.perf_counter()
    predict(x)
    return max(1, round(seconds / max(time.perf_counter() - start, 1e-6)))


# -- agreement ----------------------------------------------------------------------------


@torch.no_grad()
def agreement_rows(
    model: nn.Module, calib: list, test: list, args: argparse.Namespace
) -> Iterator[dict[str, Any]]:
    from mixq.integer.fast import lower

    for preset in args.presets:
        for act_bits in (4, 8):
            quantized = quantize(model, calib, preset, act_bits)
            example = test[0][0][:1]
            fast = lower(mixq.to_integer(quantized, example, engine="reference"))
            # The model a user evaluates: the exact mode (its integers from the int8 engine).
            exact = mixq.integer.exact_model(quantized, example, engine="int8").eval()
            evaluated = exact.integer_model()
            correct_fake = correct_fast = differ = differ_fake = integer_mismatch = total = 0
            for images, labels in test:
                fake = quantized(images).argmax(1)
                out = fast.forward_integer(images)
                evaluated_out = evaluated.forward_integer(images)
                integer_mismatch += int((out != evaluated_out).any(1).sum())
                predicted = out.argmax(1)
                correct_fake += int((fake == labels).sum())
                correct_fast += int((predicted == labels).sum())
                differ += int((predicted != evaluated_out.argmax(1)).sum())
                differ_fake += int((predicted != fake).sum())
                total += len(labels)
            yield {
                "kind": "agreement",
                "preset": preset,
                "act_bits": act_bits,
                "images": total,
                "top1_fake_quant": correct_fake / total,
                "top1": correct_fast / total,
                "disagreements": differ,  # deployed (fast) against the exact mode
                "images_with_different_integers": integer_mismatch,
                "fake_quant_disagreements": differ_fake,  # against float fake-quant
            }


if __name__ == "__main__":
    main()
