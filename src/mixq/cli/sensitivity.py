"""``mixq sensitivity``: Hessian traces of a built-in model, written as a table.

    mixq sensitivity --model resnet20 --weights resnet20-12fca82f.th -o out/
    mixq sensitivity --model resnet20 --weights w.th --method gauss-newton --images 128 -o out/
    mixq sensitivity --model resnet20 --weights w.th --images 128 --batch-size 128 --tolerance 0.05

Traces are taken w.r.t. the BN-folded weights the quantiser sees, per layer and per row, on
batches drawn from ``--images`` class-balanced training images (``--images`` equal to
``--batch-size``: the Hessian of one fixed batch). Each layer is probed until its relative
standard error is at most ``--tolerance`` or it reaches ``--max-probes``. Writes
``<output>/sensitivity.json`` (default ``mixq-sensitivity/``; read by ``mixq allocate``)
and prints the per-layer traces.

``--method gauss-newton`` computes every layer's and row's trace exactly from per-sample
Jacobians instead (seconds on ResNet-20, zero standard error): in a network that is
piecewise linear in each layer's weights (ReLU CNNs, BN folded) a layer's Hessian block is
its Gauss-Newton block, which a check along one random direction per layer confirms (the
gap is recorded; a curved model warns). ``--method auto`` runs the check first and takes
the exact traces when it passes, Hutchinson otherwise. The probe options apply to
Hutchinson only.

Under torchrun every process loads the same model and batches and computes its share of
the probes (probe k on rank k mod N); the per-probe sums are all-reduced, so N processes
write the table one process writes for the same probes (up to float rounding). Rank 0
alone prints, shows progress and writes the file:

    torchrun --nproc_per_node=2 -m mixq sensitivity --model resnet20 --weights w.th -o out/
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from mixq.cli._common import (
    add_command,
    add_data_options,
    add_model_option,
    load_model,
    positive_int,
)
from mixq.distributed_env import barrier, launched_ranks, process_group, rank_device
from mixq.sensitivity import (
    GAP_WARNING,
    HutchinsonConfig,
    SensitivityTable,
    gauss_newton_gap,
    gauss_newton_traces,
    hutchinson_traces,
)

log = logging.getLogger("mixq")

TABLE_NAME = "sensitivity.json"


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_command(
        subparsers, common, "sensitivity", __doc__,
        help="Hessian traces per layer and per row (Hutchinson or exact); write sensitivity.json",
    )  # fmt: skip
    add_model_option(parser, required=False)
    parser.add_argument(
        "--weights",
        type=Path,
        required=True,
        help="float weights (.th/.pt, needs --model) or a quantised .safetensors checkpoint",
    )
    parser.add_argument(
        "--images",
        type=positive_int,
        default=1024,
        help="class-balanced training images the batches come from (default %(default)s)",
    )
    parser.add_argument(
        "--method",
        choices=["hutchinson", "gauss-newton", "auto"],
        default="hutchinson",
        help="Hutchinson probes, exact Gauss-Newton traces, or exact when the check "
        "passes (default %(default)s)",
    )
    parser.add_argument("--tolerance", type=float, default=0.05, help="default %(default)s")
    parser.add_argument("--stop-on", choices=["stderr", "change"], default="stderr")
    parser.add_argument("--min-probes", type=positive_int, default=8)
    parser.add_argument("--max-probes", type=positive_int, default=100, help="per layer")
    parser.add_argument("--batches-per-probe", type=positive_int, default=1)
    parser.add_argument("--probe-scope", choices=["layer", "model"], default="layer")
    parser.add_argument(
        "--hvp", choices=["forward-over-reverse", "reverse-over-reverse"],
        default="forward-over-reverse",
    )  # fmt: skip
    parser.add_argument(
        "--no-fold-bn", action="store_true", help="traces w.r.t. the raw conv weights"
    )
    parser.add_argument("--seed", type=int, default=0)
    add_data_options(parser)
    parser.set_defaults(handler=run, outputs=planned_outputs, output="mixq-sensitivity")


def planned_outputs(args: argparse.Namespace) -> list[Path]:
    return [Path(args.output) / TABLE_NAME]


def run(args: argparse.Namespace) -> int:
    config = HutchinsonConfig(
        tolerance=args.tolerance,
        stop_on=args.stop_on,
        min_probes=args.min_probes,
        max_probes=args.max_probes,
        batches_per_probe=args.batches_per_probe,
        probe_scope=args.probe_scope,
        hvp_mode=args.hvp,
        fold_bn=not args.no_fold_bn,
        seed=args.seed,
    )
    device = rank_device(args.torch_device, launched_ranks())
    with process_group(device) as ranks:
        loaded = load_model(args.weights, args.model, device, args.data)
        batches = loaded.spec.loader(
            "train", args.batch_size, root=args.data_dir, limit=args.images, seed=args.seed
        )
        table = _traces(
            args, loaded.model, batches, config, loaded.spec.name, not args.quiet and ranks.is_main
        )
        path = Path(args.output) / TABLE_NAME
        try:
            if ranks.is_main:  # every rank holds the same table; one writes it
                table.save(path)
        finally:
            barrier()  # reached also when the write fails: no rank is left waiting
        if not ranks.is_main:
            return 0
    print("\n".join(table.format_rows()))
    run_record = table.run
    if run_record.method == "gauss-newton":
        print(
            f"exact Gauss-Newton traces on {run_record.samples} samples in "
            f"{run_record.seconds:.1f} s (Hessian gap {run_record.hessian_gap:.1e})"
        )
        log.info("wrote %s", path)
        return 0
    state = "converged" if run_record.converged else "stopped at the probe cap"
    print(
        f"{run_record.hvp_count} Hessian-vector products in {run_record.seconds:.1f} s; "
        f"{state} (worst relative standard error {run_record.max_rel_stderr:.1%})"
    )
    log.info("wrote %s", path)
    return 0


def _traces(
    args: argparse.Namespace,
    model: nn.Module,
    batches: Iterable[Any],
    config: HutchinsonConfig,
    model_name: str,
    progress: bool,
) -> SensitivityTable:
    """The table by ``--method``; ``auto`` takes the exact traces when the check passes."""
    weights_path = str(args.weights.resolve())
    method = args.method
    gap = None
    if method == "auto":
        gap = gauss_newton_gap(model, batches, fold_bn=config.fold_bn, seed=config.seed)
        method = "gauss-newton" if gap <= GAP_WARNING else "hutchinson"
        log.info("Hessian and Gauss-Newton differ by %.1e: %s traces", gap, method)
    if method == "gauss-newton":
        return gauss_newton_traces(
            model,
            batches,
            fold_bn=config.fold_bn,
            seed=config.seed,
            hessian_gap=gap,
            model_name=model_name,
            weights_path=weights_path,
            progress=progress,
        )
    return hutchinson_traces(
        model,
        batches,
        config,
        model_name=model_name,
        weights_path=weights_path,
        progress=progress,
    )
