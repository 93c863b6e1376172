"""``mixq eval``: top-1 accuracy of a quantised checkpoint or of float weights.

    mixq eval out/quantized.safetensors                         # the deployed integer model
    mixq eval out/quantized.safetensors --integer reference     # the same integers, int64 engine
    mixq eval out/quantized.safetensors --fake-quant            # the float simulation instead
    mixq eval out/quantized.safetensors --float activations     # quantised weights, float inputs
    mixq eval resnet20-12fca82f.th --model resnet20 -o results/
    mixq eval out/quantized.safetensors --timing --images 512 --threads 1   # images per second

A quantised checkpoint is evaluated as it is deployed: converted to integers
(``mixq.to_integer``, on the ``int8`` engine unless ``--integer`` names another; every
engine computes the same integers) and run, with the number of predictions the
fake-quantised float model makes differently printed beside it. ``--fake-quant`` reports
the fake-quantised model instead; a model the integer engine cannot convert falls back to
it with a warning that says so. ``--float`` switches quantisation off in the same model
(``all``, or only ``weights`` or ``activations``), to see which part costs accuracy.
Nothing is written unless ``--output`` says where: then ``eval.json`` (one result row:
method, evaluated, eq_bits, top1, weight_kib; its ``command`` reproduces the run), which
``mixq report --results`` plots. ``--timing`` also measures images per second of float,
fake-quant and every integer engine on the same test batches (``--timing-batches`` of them,
``--batch-size`` images each) and, with ``--output``, writes them to ``timing.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import shlex
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mixq.cli._common import (
    LoadedModel,
    add_command,
    add_data_options,
    add_model_option,
    load_model,
    positive_int,
)
from mixq.cli._results import ResultFile
from mixq.cli._zoo import top1
from mixq.errors import (
    CheckpointError,
    IntegerConversionError,
    UnsupportedLayerError,
)
from mixq.integer import to_integer
from mixq.integer.compile import ENGINES
from mixq.integer.ops import Engine
from mixq.summary import describe, fp32_weight_kib
from mixq.toggle import quantization_disabled

log = logging.getLogger("mixq")
FLOAT_PARTS = ("all", "weights", "activations")
EVAL_NAME = "eval.json"
TIMING_NAME = "timing.json"
DEFAULT_ENGINE: Engine = "int8"  # the same integers as every engine, without a first-use C++ build

SUMMARY = (  # the line in `mixq --help`
    "top-1 accuracy of a quantised checkpoint or float weights"
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_command(subparsers, common, "eval", __doc__, help=SUMMARY)
    parser.add_argument("checkpoint", type=Path, help="quantized.safetensors or float weights")
    add_model_option(parser, required=False)
    # One model per run: the deployed integers, the fake-quant simulation, or parts in float.
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--float",
        dest="float_part",
        nargs="?",
        const="all",
        choices=FLOAT_PARTS,
        help="evaluate with quantisation of these switched off (alone: all)",
    )
    which.add_argument(
        "--integer",
        nargs="?",
        const=DEFAULT_ENGINE,
        choices=ENGINES,
        help=f"the integer engine that runs the deployed model (default {DEFAULT_ENGINE})",
    )
    which.add_argument(
        "--fake-quant",
        action="store_true",
        help="evaluate the fake-quantised float simulation instead of the deployed integers",
    )
    parser.add_argument(
        "--images", type=positive_int, help="a class-balanced subset of the test set"
    )
    parser.add_argument(
        "--timing", action="store_true", help="images per second of every engine against float"
    )
    parser.add_argument(
        "--timing-batches", type=positive_int, default=4, help="batches timed (default 4)"
    )
    add_data_options(parser, batch_size=500)
    parser.set_defaults(handler=run, outputs=planned_outputs)


def planned_outputs(args: argparse.Namespace) -> list[Path]:
    if args.output is None:
        return []
    return [Path(args.output) / name for name in (EVAL_NAME, TIMING_NAME)[: 1 + args.timing]]


def run(args: argparse.Namespace) -> int:
    deployed = not (args.fake_quant or args.float_part)
    device = "cpu" if deployed else args.torch_device  # the integer engines run on the CPU
    loaded = load_model(args.checkpoint, args.model, device, args.data)
    if args.float_part and not loaded.quantized:
        raise CheckpointError("--float needs a quantised checkpoint; these weights are float")
    if (args.integer or args.fake_quant) and not loaded.quantized:
        raise CheckpointError("--integer and --fake-quant need a quantised checkpoint")
    if args.timing and not loaded.quantized:
        raise CheckpointError("--timing needs a quantised checkpoint")
    loader = loaded.spec.loader("test", args.batch_size, root=args.data_dir, limit=args.images)
    engine: Engine = args.integer or DEFAULT_ENGINE
    integer = _integer_model(loaded, engine, explicit=args.integer is not None)
    deployed = deployed and loaded.quantized and integer is not None
    disagreements = None
    if deployed:
        accuracy, disagreements = _integer_top1(loaded, integer, loader, not args.quiet)
    else:
        with _switched_off(loaded, args.float_part):
            accuracy = top1(loaded.model, loader, progress=not args.quiet)
    row = _row(loaded, args.float_part, accuracy)
    row["evaluated"] = _evaluated(loaded, args.float_part, engine if deployed else None)
    images = args.images or len(loader.dataset)  # type: ignore[arg-type]
    if disagreements is not None:
        row["fake_quant_disagreements"] = disagreements
    print(
        f"{loaded.spec.name} {row['method']} ({row['evaluated']}): top-1 {accuracy:.4f} on "
        f"{images} test images, {row['eq_bits']:.3f} equivalent bits, "
        f"{row['weight_kib']:.1f} KiB"
    )
    if disagreements is not None:
        print(f"{disagreements} of {images} predictions differ from the fake-quantised model's")
    if args.output is not None:
        settings = {"model": loaded.spec.name, "images": images, "checkpoint": str(args.checkpoint)}
        path = Path(args.output) / EVAL_NAME
        ResultFile.new("mixq_eval", eval_command(args), settings, [row]).save(path)
        log.info("wrote %s", path)
    if args.timing:
        _timing(args, loaded, loader)
    return 0


def _timing(args: argparse.Namespace, loaded: LoadedModel, loader: Any) -> None:
    from mixq.cli._timing import format_timings, time_engines

    loaded.model.cpu()  # the integer engines run on the CPU; float is timed there too
    batches = [images for images, _ in itertools.islice(iter(loader), args.timing_batches)]
    rows = time_engines(loaded.model, loaded.spec.example_input(), batches)
    threads = torch.get_num_threads()
    print(format_timings(rows, batch=int(batches[0].shape[0]), threads=threads))
    if args.output is not None:
        settings = {
            "model": loaded.spec.name,
            "checkpoint": str(args.checkpoint),
            "batch": int(batches[0].shape[0]),
            "batches": len(batches),
            "threads": threads,
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
        path = Path(args.output) / TIMING_NAME
        result = [row.to_dict() for row in rows]
        ResultFile.new("mixq_eval_timing", eval_command(args), settings, result).save(path)
        log.info("wrote %s", path)


def eval_command(args: argparse.Namespace) -> str:
    """The command line that reproduces this evaluation: every option, defaults spelled out."""
    parts = ["mixq", "eval", str(args.checkpoint)]
    options: list[tuple[str, Any]] = [
        ("--model", args.model),
        ("--float", args.float_part),
        ("--integer", args.integer),
        ("--fake-quant", "" if args.fake_quant else None),
        ("--images", args.images),
        ("--timing", "" if args.timing else None),
        ("--timing-batches", args.timing_batches if args.timing else None),
        ("--data-dir", args.data_dir),
        ("--batch-size", args.batch_size),
        ("--threads", args.threads),
        ("--device", None if args.torch_device == "cpu" else args.torch_device),
        ("--output", args.output),
    ]
    for name, value in options:
        if value is not None:
            parts += [name, str(value)] if value != "" else [name]
    return shlex.join(parts)


def _integer_model(loaded: LoadedModel, engine: Engine, *, explicit: bool) -> Any:
    """The deployed integer model, or None (with a warning) where the engine cannot run the
    model and no engine was asked for by name."""
    if not loaded.quantized:
        return None
    try:
        return to_integer(loaded.model, loaded.spec.example_input(), engine=engine)
    except (IntegerConversionError, UnsupportedLayerError) as exc:
        if explicit:
            raise
        log.warning("not deployable as integers (%s); evaluating the fake-quantised model", exc)
        return None


def _evaluated(loaded: LoadedModel, part: str | None, engine: str | None) -> str:
    if not loaded.quantized:
        return "float"
    if part is not None:
        return f"float-{part}"
    return f"integer-{engine}" if engine else "fake-quant"


@torch.no_grad()
def _integer_top1(
    loaded: LoadedModel, integer: Any, loader: Any, progress: bool
) -> tuple[float, int]:
    """Top-1 of the integer model, and how many predictions differ from fake-quant's."""
    loaded.model.eval()
    correct = total = disagreements = 0
    for images, labels in tqdm(
        loader, desc="evaluate", disable=None if progress else True, leave=False
    ):
        predicted = integer(images).argmax(dim=1)
        correct += int((predicted == labels).sum())
        disagreements += int((predicted != loaded.model(images).argmax(dim=1)).sum())
        total += int(labels.numel())
    return correct / max(total, 1), disagreements


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
