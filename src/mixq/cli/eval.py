"""``mixq eval``: top-1 accuracy of a quantised checkpoint or of float weights.

    mixq eval out/quantized.safetensors
    mixq eval out/quantized.safetensors --float activations   # quantised weights, float inputs
    mixq eval resnet20-12fca82f.th --model resnet20 -o results/

``--float`` switches quantisation off in the same model (``all``, or only ``weights`` or
``activations``), to see which part costs accuracy. With ``--output``, writes
``eval.json`` (one result row: method, eq_bits, top1, weight_kib), which ``mixq report
--results`` plots.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path
from typing import Any

from mixq.cli._common import (
    LoadedModel,
    add_data_options,
    add_model_option,
    load_model,
    positive_int,
)
from mixq.cli._results import ResultFile
from mixq.cli._zoo import top1
from mixq.errors import CheckpointError
from mixq.summary import describe, fp32_weight_kib
from mixq.toggle import quantization_disabled

log = logging.getLogger("mixq")
FLOAT_PARTS = ("all", "weights", "activations")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "eval",
        parents=[common],
        help="top-1 accuracy of a quantised checkpoint or float weights",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", type=Path, help="quantized.safetensors or float weights")
    add_model_option(parser, required=False)
    parser.add_argument(
        "--float",
        dest="float_part",
        nargs="?",
        const="all",
        choices=FLOAT_PARTS,
        help="evaluate with quantisation of these switched off (alone: all)",
    )
    parser.add_argument(
        "--images", type=positive_int, help="a class-balanced subset of the test set"
    )
    add_data_options(parser, batch_size=500)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_model(args.checkpoint, args.model)
    if args.float_part and not loaded.quantized:
        raise CheckpointError("--float needs a quantised checkpoint; these weights are float")
    loader = loaded.spec.loader("test", args.batch_size, root=args.data_dir, limit=args.images)
    with _switched_off(loaded, args.float_part):
        accuracy = top1(loaded.model, loader, progress=not args.quiet)
    row = _row(loaded, args.float_part, accuracy)
    images = args.images or len(loader.dataset)  # type: ignore[arg-type]
    print(
        f"{loaded.spec.name} {row['method']}: top-1 {accuracy:.4f} on {images} test images, "
        f"{row['eq_bits']:.3f} equivalent bits, {row['weight_kib']:.1f} KiB"
    )
    if args.output is not None:
        settings = {"model": loaded.spec.name, "images": images, "checkpoint": str(args.checkpoint)}
        command = f"mixq eval {args.checkpoint}" + (
            f" --float {args.float_part}" if args.float_part else ""
        )
        path = Path(args.output) / "eval.json"
        ResultFile.new("mixq_eval", command, settings, [row]).save(path)
        log.info("wrote %s", path)
    return 0


def _switched_off(loaded: LoadedModel, part: str | None) -> contextlib.AbstractContextManager[Any]:
    if part is None:
        return contextlib.nullcontext()
    return quantization_disabled(
        loaded.model, weights=part in ("all", "weights"), activations=part in ("all", "activations")
    )


def _row(loaded: LoadedModel, part: str | None, accuracy: float) -> dict[str, Any]:
    method = loaded.method if part is None else f"{loaded.method}-float-{part}"
    if not loaded.quantized or part in ("all", "weights"):
        eq_bits, kib = 32.0, fp32_weight_kib(loaded.spec.build())
    else:
        summary = describe(loaded.model)
        eq_bits, kib = summary.eq_bits, summary.weight_kib
    return {
        "method": method,
        "eq_bits": round(eq_bits, 4),
        "top1": accuracy,
        "weight_kib": round(kib, 2),
    }
