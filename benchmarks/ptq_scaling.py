"""Post-training quantisation time against depth: one pass (lockstep) vs layer by layer.

``mixq.quantize`` with a 4-bit preset (GPTQ rounding, the default) on CIFAR ResNet-20/32
(pretrained) and ResNet-44/56 (random initialisation: the time does not depend on the
weights), all on the same calibration images and thread count; MiniLM on STS-B training
sentences. The layer-by-layer method (one full forward per layer, the previous default) is
timed on the depths given by ``--layerwise-depths``. On ResNet-20 both methods' top-1 is
measured on the first ``--test-images`` CIFAR-10 test images, and so is the precision of
the per-batch second moments (float64 against float32 products: share of rounded weights
that differ, and top-1). Each figure is one run; the machine's load is recorded beside it,
and so is the process's CPU time (all its threads), which other jobs' load changes less.

    nice -n 10 python benchmarks/ptq_scaling.py
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from _common import add_run_options, start_run, write_result
from _common import top1 as _top1
from torch import nn

import mixq
import mixq.convert
from mixq.data import cifar10_loader
from mixq.models import load_pretrained_cifar_resnet, resnet20, resnet32, resnet44, resnet56
from mixq.nn.layers import QUANT_LAYERS
from mixq.ptq.rounding import apply_error_feedback, apply_error_feedback_layerwise

NAME = "ptq_scaling"
BUILDERS = {20: resnet20, 32: resnet32, 44: resnet44, 56: resnet56}
PRETRAINED = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="rmsmp")
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--depths", type=int, nargs="*", default=[20, 56, 32, 44])
    parser.add_argument("--layerwise-depths", type=int, nargs="*", default=[20])
    parser.add_argument("--calib-sentences", type=int, default=256)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument(
        "--act-bits",
        type=int,
        default=8,
        help="0: float layer inputs, so quantize's time is the weights' (swap and rounding)",
    )
    parser.add_argument("--precision", action="store_true", help="float32 vs float64 moments")
    add_run_options(parser, threads=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    root = start_run(args)
    images = root / "cifar10-jpeg"
    calib = list(cifar10_loader(images, "train", args.batch, limit=args.calib_images))
    test = list(cifar10_loader(images, "test", 500, limit=args.test_images))
    settings: dict[str, Any] = {
        "preset": args.preset,
        "calibration_images": args.calib_images,
        "calibration_batch": args.batch,
        "test_images": args.test_images,
        "weight_rounding": "gptq",
        "runs_per_figure": 1,
        "nice": os.nice(0),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    rows: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        print(row, flush=True)
        write_result(NAME, settings, rows, args.output)

    settings["act_bits"] = args.act_bits
    preset = mixq.Recipe.preset(args.preset, act_bits=args.act_bits)
    models = {depth: _cifar_model(depth, root) for depth in args.depths}
    quantized: dict[tuple[str, int], nn.Module] = {}

    def run(depth: int, method: str, rounding: Callable[..., list[str]]) -> None:
        seconds, model, load = _timed_quantize(models[depth], preset, calib, rounding)
        quantized[(method, depth)] = model
        row = _row(f"resnet{depth}", method, seconds, model, load)
        if depth == 20:
            row["top1"] = top1(model, test)
        record(row)

    for depth in args.depths:  # the scaling rows first, then the slower comparisons
        run(depth, "one-pass", apply_error_feedback)
    if not args.skip_minilm:
        _minilm_row(root, args, record)
    for depth in args.layerwise_depths:
        run(depth, "layerwise", apply_error_feedback_layerwise)
        record(
            _compare(
                f"resnet{depth}",
                "layerwise vs one-pass",
                quantized[("layerwise", depth)],
                quantized[("one-pass", depth)],
            )
        )
    if args.precision and 20 in args.depths:
        _precision_rows(models[20], preset, calib, test, quantized, record)
    _ratios(rows, settings)
    settings["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = write_result(NAME, settings, rows, args.output)
    _plot(rows, path.with_suffix(".png"))
    print(f"wrote {path}")


def top1(model: nn.Module, test: list) -> float:
    with torch.no_grad():
        return _top1(model, test)


def _cifar_model(depth: int, root: Any) -> nn.Module:
    torch.manual_seed(0)
    model = BUILDERS[depth]()
    if depth in PRETRAINED:
        model = load_pretrained_cifar_resnet(model, root / "resnet-cifar10" / PRETRAINED[depth])
    return model.eval()


def _timed_quantize(
    model: nn.Module, recipe: Any, calib: list, rounding: Callable[..., list[str]]
) -> tuple[float, nn.Module, list[float]]:
    """``mixq.quantize`` with ``rounding`` in place of the default error feedback."""
    original = mixq.convert.apply_error_feedback
    spent: list[float] = []

    def timed_rounding(*args: Any, **kwargs: Any) -> list[str]:
        start = time.perf_counter()
        try:
            return rounding(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    mixq.convert.apply_error_feedback = timed_rounding  # type: ignore[assignment]
    load_before = os.getloadavg()[0]
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        quantized = mixq.quantize(
            model, recipe, calibration_data=calib, calibration_batches=len(calib), progress=False
        )
        seconds = time.perf_counter() - start
        quantized.cpu_s = time.process_time() - cpu_start  # type: ignore[assignment]
    finally:
        mixq.convert.apply_error_feedback = original  # type: ignore[assignment]
    quantized.rounding_s = sum(spent)  # type: ignore[assignment]
    return seconds, quantized, [round(load_before, 2), round(os.getloadavg()[0], 2)]


def _row(model_name: str, method: str, seconds: float, model: nn.Module, load: list[float]):
    layers = sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())
    return {
        "model": model_name,
        "method": method,
        "layers": layers,
        "quantize_s": round(seconds, 2),
        "rounding_s": round(float(model.rounding_s), 2),  # GPTQ error feedback alone
        # CPU seconds of every thread of this process: less sensitive to other jobs' load.
        "quantize_cpu_s": round(float(model.cpu_s), 2),
        "threads": torch.get_num_threads(),
        "load_average_before_after": load,
    }


def _precision_rows(
    model: nn.Module,
    preset: Any,
    calib: list,
    test: list,
    quantized: dict[tuple[str, int], nn.Module],
    record: Callable[[dict[str, Any]], None],
) -> None:
    reference = quantized[("one-pass", 20)]
    rounding = functools.partial(apply_error_feedback, moment_dtype=torch.float32)
    seconds, single, load = _timed_quantize(model, preset, calib, rounding)
    row = _row("resnet20", "one-pass, float32 moments", seconds, single, load)
    row["top1"] = top1(single, test)
    record(row)
    record(_compare("resnet20", "float32 vs float64 moments", single, reference))


def _compare(model_name: str, what: str, a: nn.Module, b: nn.Module) -> dict[str, Any]:
    """Share of quantised weights that differ between two quantisations of one model."""
    differ = total = 0
    modules_b = dict(b.named_modules())
    with torch.no_grad():
        for name, layer in a.named_modules():
            if isinstance(layer, QUANT_LAYERS):
                qa, qb = layer.quantized_weight(), modules_b[name].quantized_weight()
                differ += int((qa != qb).sum())
                total += qa.numel()
    return {
        "model": model_name,
        "comparison": what,
        "weights": total,
        "differing": differ,
        "differing_share": differ / total,
    }


def _minilm_row(root: Any, args: argparse.Namespace, record: Callable) -> None:
    from mixq.data.stsb import load_stsb, sentence_batches
    from mixq.models.sentence_encoder import load_minilm

    encoder, tokenizer = load_minilm()
    sentences = load_stsb(root / "sts-b" / "train.tsv").sentences()
    calib = sentence_batches(tokenizer, sentences[: args.calib_sentences], args.batch)
    recipe = mixq.Recipe(mixq.LayerConfig(mixq.Ratio.parse("sp2-4:0.5,fixed-4:0.5"), act_bits=8))
    seconds, model, load = _timed_quantize(encoder, recipe, calib, apply_error_feedback)
    row = _row("all-MiniLM-L6-v2", "one-pass", seconds, model, load)
    row["calibration_sentences"] = args.calib_sentences
    row["recipe"] = "sp2-4:0.5,fixed-4:0.5 on every Linear, 8-bit inputs"
    record(row)


def _ratios(rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    for key in ("quantize_s", "rounding_s"):
        times = {(r["model"], r["method"]): r[key] for r in rows if key in r}
        base = times.get(("resnet20", "one-pass"))
        if base:
            settings[f"one_pass_{key}_over_resnet20"] = {
                m: round(t / base, 2)
                for (m, meth), t in times.items()
                if meth == "one-pass" and m.startswith("resnet")
            }


def _plot(rows: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, marker in (("one-pass", "o-"), ("layerwise", "s--")):
        points = [
            (r["layers"], r["quantize_s"])
            for r in rows
            if r.get("method") == method and r["model"].startswith("resnet")
        ]
        if points:
            ax.plot(*zip(*sorted(points), strict=True), marker, label=f"ResNet, {method}")
    for r in rows:
        if r["model"] == "all-MiniLM-L6-v2":
            ax.plot([r["layers"]], [r["quantize_s"]], "^", label="MiniLM-L6, one-pass")
    for r in rows:  # the machine is shared: each time beside the load it ran under
        if "quantize_s" in r and r.get("load_average_before_after"):
            load = max(r["load_average_before_after"])
            ax.annotate(
                f"load {load:.1f}",
                (r["layers"], r["quantize_s"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(4, -10),
            )
    ax.set_xlabel("quantised layers")
    ax.set_ylabel("mixq.quantize time (s)")
    ax.set_title("PTQ time against depth (GPTQ rounding, same calibration data)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
