"""``mixq quantize``: quantise a built-in model's float weights with a recipe.

    mixq quantize --model resnet20 --weights resnet20-12fca82f.th --recipe rmsmp -o out/
    mixq quantize --model small-cnn --weights float.pt --recipe my_recipe.yaml --plan plan.json

The recipe is a preset (fixed4, pot4, sp2-4, fixed8, msp, rmsmp; ``--act-bits`` and
``--first-last`` shape it) or a YAML/JSON recipe file. Activation ranges are calibrated
(and weights rounded with error feedback) on ``--calib-images`` training images. Writes
``<output>/quantized.safetensors`` (default ``mixq-quantized/``), which records the model's
name and the recipe, and prints the per-layer summary. The destination is checked before
calibration starts.

Under torchrun the same command calibrates and rounds on N processes (gloo on the CPU,
NCCL on CUDA, where ``--device cuda`` gives each process the GPU of its LOCAL_RANK):

    torchrun --nproc_per_node=2 -m mixq quantize --model resnet20 --weights w.th -o out/

Each process reads the ``--calib-images`` and keeps a contiguous share of their batches
(rank 0 the first ones); activation ranges and GPTQ's second moments are reduced across
the processes, so N processes quantise as one process on all the batches (up to the order
of float64 sums when a process has more than one batch). Rank 0 alone prints, shows
progress and writes the file; ``--calib-images`` must give at least one batch per process
(see docs/distributed.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import mixq
from mixq.checkpoint import require_finite_state, save_quantized
from mixq.cli._common import (
    QUANTIZED_NAME,
    add_command,
    add_data_options,
    add_model_option,
    load_model,
    positive_int,
    quiet_unless_main,
    require_text_file,
)
from mixq.cli._report_data import build_report, format_report
from mixq.distributed_env import (
    Ranks,
    barrier,
    launched_ranks,
    process_group,
    rank_device,
    rank_share,
)
from mixq.errors import CheckpointError, RecipeError
from mixq.plan import Plan
from mixq.recipe import PRESET_RATIOS, Recipe

log = logging.getLogger("mixq")

SUMMARY = (  # the line in `mixq --help`
    "quantise float weights with a recipe (and a plan); write quantized.safetensors"
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_command(subparsers, common, "quantize", __doc__, help=SUMMARY)
    add_model_option(parser, required=True)
    parser.add_argument("--weights", type=Path, required=True, help="float weights (.th/.pt)")
    parser.add_argument(
        "--recipe",
        default="rmsmp",
        help=f"a preset ({', '.join(PRESET_RATIOS)}) or a YAML/JSON recipe file "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--act-bits",
        type=int,
        default=None,
        help="presets only: activation bits, 0 (float) or 2-16 (default 8)",
    )
    parser.add_argument(
        "--first-last",
        help="presets only: candidate of the first and last layer (default fixed-8; "
        "'none': like the rest)",
    )
    parser.add_argument("--plan", type=Path, help="a plan JSON file (mixq.plan.Plan)")
    parser.add_argument(
        "--calib-images",
        type=positive_int,
        default=512,
        help="training images for calibration and rounding (default %(default)s); under "
        "torchrun each process takes a share of their batches",
    )
    add_data_options(parser, batch_size=64)
    parser.set_defaults(handler=run, outputs=planned_outputs, output="mixq-quantized")


def planned_outputs(args: argparse.Namespace) -> list[Path]:
    return [Path(args.output) / QUANTIZED_NAME]


def resolve_recipe(text: str, act_bits: int | None, first_last: str | None) -> tuple[Recipe, str]:
    """The recipe and its label: a preset shaped by the options, or a recipe file."""
    if text in PRESET_RATIOS:
        edge = first_last or "fixed-8"
        bits = 8 if act_bits is None else act_bits
        preset = Recipe.preset(
            text, act_bits=bits, first_last=None if edge.lower() == "none" else edge
        )
        return preset, text
    path = Path(text)
    if path.suffix not in (".yaml", ".yml", ".json"):
        raise RecipeError(
            f"unknown recipe {text!r}: give a preset ({', '.join(PRESET_RATIOS)}) "
            "or a .yaml/.json recipe file"
        )
    if act_bits is not None or first_last is not None:
        raise RecipeError(
            "--act-bits and --first-last shape presets only; say it in the recipe file"
        )
    return Recipe.load(path), path.stem


def run(args: argparse.Namespace) -> int:
    recipe, method = resolve_recipe(args.recipe, args.act_bits, args.first_last)
    plan = Plan.load(require_text_file(args.plan, "plan file")) if args.plan else None
    if plan is not None:
        method = f"{method}+{plan.method}"
    device = rank_device(args.torch_device, launched_ranks())
    with process_group(device) as ranks, quiet_unless_main(ranks.is_main):
        return _quantize(args, recipe, plan, method, device, ranks)


def _quantize(
    args: argparse.Namespace,
    recipe: Recipe,
    plan: Plan | None,
    method: str,
    device: str,
    ranks: Ranks,
) -> int:
    loaded = load_model(args.weights, args.model, device, args.data)
    if loaded.quantized:
        raise CheckpointError(f"{args.weights} is a quantised model; quantize needs float weights")
    batches = loaded.spec.loader(
        "train", args.batch_size, root=args.data_dir, limit=args.calib_images
    )
    # Every rank reads the same batches and keeps its contiguous share: in rank order the
    # shares are the one-process list, as calibrate and the moment all-reduce expect.
    calibration = rank_share(
        list(batches), ranks, "calibration batches (--calib-images / --batch-size)"
    )
    quantized = mixq.quantize(
        loaded.model,
        recipe,
        calibration_data=calibration,
        calibration_batches=len(calibration),
        plan=plan,
        progress=not args.quiet and ranks.is_main,
    )
    path = Path(args.output) / QUANTIZED_NAME
    if not ranks.is_main:
        # The same model on every rank: a non-finite one fails here as on rank 0. Every
        # rank reaches the barrier whatever fails, so none is left waiting at it.
        try:
            require_finite_state(quantized.state_dict(), str(path))
        finally:
            barrier()  # until rank 0 has written the file (or failed to)
        return 0
    extra = {
        "model": args.model,
        "method": method,
        "recipe": recipe.to_dict(),
        "float_weights": str(args.weights.resolve()),
    }
    if ranks.distributed:
        extra["quantize_processes"] = ranks.world
    try:
        save_quantized(quantized, path, extra=extra)
    finally:
        barrier()  # the other ranks wait here, also when the write fails
    report = build_report(quantized, loaded.spec.build(), model_name=args.model, method=method)
    print(format_report(report, mixq.describe(quantized)))
    log.info("wrote %s", path)
    return 0
