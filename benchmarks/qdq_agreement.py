"""mixq's QDQ ONNX export of the pretrained ResNet-20 in onnxruntime: top-1, the
predictions that differ from mixq's integer engine and from the fake-quantised model, the
largest logit difference, and which ops onnxruntime fused (``QLinearConv``/``QGemm``).

To separate the format's own rounding from the runtime's, the fake-quantised model is also
run with each layer's bias replaced by the QDQ file's int32 bias (dequantised): where that
model agrees with onnxruntime, the differences from fake-quant come from the bias rounding
the format requires (int32 at input step times weight scale), not from onnxruntime.

    python benchmarks/qdq_agreement.py --images 2000 --presets rmsmp fixed8 --act-bits 8 4
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from _common import add_run_options, start_run, write_result
from onnx import numpy_helper

import mixq
from mixq.data import cifar10_loader
from mixq.export.onnx_runtime import run_onnx
from mixq.export.qdq import export_qdq
from mixq.integer import to_integer
from mixq.models import load_pretrained_cifar_resnet, resnet20
from mixq.nn.layers import QUANT_LAYERS, QuantConv2d


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="CIFAR-10 test images")
    parser.add_argument("--calib-images", type=int, default=512)
    parser.add_argument("--presets", nargs="+", default=["rmsmp"])
    parser.add_argument("--act-bits", type=int, nargs="+", default=[8])
    parser.add_argument("--engine", default="int8", help="mixq engine to compare with")
    add_run_options(parser, threads=1)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    root = start_run(args)
    load_start = os.getloadavg()
    float_model = load_pretrained_cifar_resnet(
        resnet20(), root / "resnet-cifar10" / "resnet20-12fca82f.th"
    )
    calib = [
        x for x, _ in cifar10_loader(root / "cifar10-jpeg", "train", 64, limit=args.calib_images)
    ]
    test = list(cifar10_loader(root / "cifar10-jpeg", "test", 250, limit=args.images))
    rows = []
    for preset in args.presets:
        for act_bits in args.act_bits:
            row = measure(float_model, calib, test, preset, act_bits, args)
            print(row, flush=True)
            rows.append(row)
    settings = {
        "images": args.images,
        "calibration_images": args.calib_images,
        "engine": args.engine,
        "threads": args.threads,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "onnxruntime": ort.__version__,
    }
    print(write_result("qdq_agreement", settings, rows, args.output))


@torch.no_grad()
def measure(
    float_model: torch.nn.Module,
    calib: list[torch.Tensor],
    test: list[tuple[torch.Tensor, torch.Tensor]],
    preset: str,
    act_bits: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    recipe = mixq.Recipe.preset(preset, act_bits=act_bits)
    quantized = mixq.quantize(
        float_model, recipe, calibration_data=calib, calibration_batches=len(calib), progress=False
    ).eval()
    example = calib[0][:1]
    integer = to_integer(quantized, example, engine=args.engine)
    folder = Path(tempfile.mkdtemp())
    path = export_qdq(quantized, example, folder / "qdq.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fused = Counter(n.op_type for n in onnx.load(folder / "optimized.onnx").graph.node)
    qdq_bias = with_qdq_biases(quantized, onnx.load(path)).eval()
    counts = Counter[str]()
    max_logit = 0.0
    for images, labels in test:
        qdq = run_onnx(session, images)
        engine = integer(images)
        fake = quantized(images)
        fake_qdq_bias = qdq_bias(images).argmax(1)
        counts["total"] += len(labels)
        counts["qdq_correct"] += int((qdq.argmax(1) == labels).sum())
        counts["engine_correct"] += int((engine.argmax(1) == labels).sum())
        counts["fake_correct"] += int((fake.argmax(1) == labels).sum())
        counts["vs_engine"] += int((qdq.argmax(1) != engine.argmax(1)).sum())
        counts["vs_fake"] += int((qdq.argmax(1) != fake.argmax(1)).sum())
        counts["bias_vs_qdq"] += int((fake_qdq_bias != qdq.argmax(1)).sum())
        counts["bias_vs_fake"] += int((fake_qdq_bias != fake.argmax(1)).sum())
        max_logit = max(max_logit, float((qdq - engine).abs().max()))
    total = counts["total"]
    return {
        "preset": preset,
        "act_bits": act_bits,
        "images": total,
        "top1_qdq_ort": counts["qdq_correct"] / total,
        "top1_mixq_engine": counts["engine_correct"] / total,
        "top1_fake_quant": counts["fake_correct"] / total,
        "disagreements_vs_engine": counts["vs_engine"],
        "disagreements_vs_fake_quant": counts["vs_fake"],
        "max_logit_difference_vs_engine": max_logit,
        "fake_quant_with_qdq_bias_vs_qdq_disagreements": counts["bias_vs_qdq"],
        "fake_quant_with_qdq_bias_vs_fake_quant_disagreements": counts["bias_vs_fake"],
        "convs": fused["QLinearConv"] + fused["FusedConv"] + fused["Conv"],
        "fused_qlinearconv": fused["QLinearConv"],
        "fused_qgemm": fused["QGemm"],
        "float_convs": fused["FusedConv"] + fused["Conv"],
    }


def with_qdq_biases(quantized: torch.nn.Module, proto: Any) -> torch.nn.Module:
    """A copy of the fake-quantised model whose layers' biases are the QDQ file's int32
    biases times their scales (BatchNorm's shift absorbs the difference where it folds)."""
    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    model = copy.deepcopy(quantized)
    with torch.no_grad():
        for name, layer in model.named_modules():
            base = name.replace(".", "_")  # the fx node name, the QDQ nodes' prefix
            if not isinstance(layer, QUANT_LAYERS) or f"{base}/bias" not in values:
                continue
            target = values[f"{base}/bias"].astype(np.float64) * values[f"{base}/bias/scale"]
            _, bias = layer.effective_weight_bias()
            assert bias is not None
            delta = torch.from_numpy(target).float() - bias
            bn = layer.bn if isinstance(layer, QuantConv2d) else None
            holder = bn.bias if bn is not None and bn.affine else layer.bias
            holder.add_(delta)
    return model


if __name__ == "__main__":
    main()
