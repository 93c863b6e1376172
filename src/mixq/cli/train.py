"""``mixq train``: fine-tune a quantised checkpoint (quantisation-aware training).

    mixq train out/quantized.safetensors --epochs 3 --lr 0.01 --distill logits -o qat/
    mixq train out/quantized.safetensors --epochs 3 --lr 0.01 --distill logits -o qat/ --resume

Each epoch ends with ``<output>/checkpoint.pt`` (written atomically) and one JSON line in
``<output>/metrics.jsonl`` (training loss, learning rate, test top-1); ``--resume``
continues a stopped run exactly where its last checkpoint left it. The result is
``<output>/quantized.safetensors`` (default ``mixq-train/``; never the checkpoint it
reads). ``--distill logits`` distils from the float model
(``--weights``, by default the float weights the checkpoint was quantised from).

Under torchrun the same command trains on N processes with DistributedDataParallel
(gloo on the CPU, NCCL on CUDA, where ``--device cuda`` gives each process the GPU of its
LOCAL_RANK); ``--batch-size`` is per process, so the global batch is N times it:

    torchrun --nproc_per_node=2 -m mixq train q.safetensors --batch-size 64 -o qat/

Each process reads its share of every epoch (DistributedSampler over the one-process
order), rank 0 alone prints, shows progress and writes the files, and a run resumes
under any number of processes (see docs/distributed.md).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields
from pathlib import Path

from torch import nn

from mixq.checkpoint import save_quantized
from mixq.cli._common import (
    QUANTIZED_NAME,
    LoadedModel,
    add_command,
    add_data_options,
    add_model_option,
    load_model,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    quiet_unless_main,
)
from mixq.cli._zoo import load_float_weights, top1
from mixq.distributed_env import Ranks, barrier, launched_ranks, process_group, rank_device
from mixq.errors import CheckpointError
from mixq.train import TrainConfig, train
from mixq.train.loop import CHECKPOINT_NAME, METRICS_NAME

log = logging.getLogger("mixq")
DEFAULTS = TrainConfig()


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_command(
        subparsers, common, "train", __doc__,
        help="fine-tune a quantised checkpoint: checkpoints, metrics.jsonl, --resume",
    )  # fmt: skip
    parser.add_argument("checkpoint", type=Path, help="a quantized.safetensors file")
    add_model_option(parser, required=False)
    parser.add_argument("--weights", type=Path, help="float weights of the teacher for --distill")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output")
    _add_config_options(parser)
    parser.add_argument(
        "--train-images", type=positive_int, help="use a class-balanced subset of the training set"
    )
    parser.add_argument(
        "--eval-images", type=positive_int, help="test images for each epoch's top-1 (default all)"
    )
    add_data_options(parser)
    _say_batch_is_per_process(parser)
    parser.set_defaults(handler=run, outputs=planned_outputs, output="mixq-train")


def _say_batch_is_per_process(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if action.dest == "batch_size":
            action.help = (
                "images per step and process (default %(default)s); under torchrun with N "
                "processes the global batch is N times this"
            )


def planned_outputs(args: argparse.Namespace) -> list[Path]:
    out = Path(args.output)
    return [out / QUANTIZED_NAME, out / CHECKPOINT_NAME, out / METRICS_NAME]


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (mixq.train.TrainConfig)")
    d = DEFAULTS
    group.add_argument("--epochs", type=positive_int, default=d.epochs)
    group.add_argument("--lr", type=positive_float, default=d.lr, help="peak learning rate")
    group.add_argument("--optimizer", choices=("sgd", "adamw"), default=d.optimizer)
    group.add_argument("--momentum", type=non_negative_float, default=d.momentum, help="SGD only")
    group.add_argument("--weight-decay", type=non_negative_float, default=d.weight_decay)
    group.add_argument(
        "--warmup-epochs",
        type=non_negative_float,
        default=d.warmup_epochs,
        help="then cosine decay",
    )
    group.add_argument("--grad-clip", type=positive_float, help="max global gradient norm")
    group.add_argument(
        "--distill",
        choices=("none", "logits", "outputs"),
        default=d.distill,
        help="match the float teacher's softened logits (KL) or outputs (MSE)",
    )
    group.add_argument("--distill-weight", type=non_negative_float, default=d.distill_weight)
    group.add_argument("--task-weight", type=non_negative_float, default=d.task_weight)
    group.add_argument("--temperature", type=positive_float, default=d.temperature)
    group.add_argument(
        "--bn-batch-stats", action="store_true", help="train folded BNs on batch statistics"
    )
    group.add_argument(
        "--freeze-bn-epoch",
        type=non_negative_int,
        help="freeze BN statistics from this epoch (0-based)",
    )
    group.add_argument("--seed", type=int, default=d.seed)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    out = Path(args.output)
    if not args.resume and (out / CHECKPOINT_NAME).exists():
        raise CheckpointError(
            f"{out} already holds a training run; pass --resume to continue it "
            "or choose another --output"
        )
    device = rank_device(args.torch_device, launched_ranks())
    with process_group(device) as ranks, quiet_unless_main(ranks.is_main):
        if args.resume and not (out / CHECKPOINT_NAME).exists() and ranks.is_main:
            log.warning("nothing to resume in %s: starting from epoch 1", out)
        return _train(args, config, out, device, ranks)


def _train(
    args: argparse.Namespace, config: TrainConfig, out: Path, device: str, ranks: Ranks
) -> int:
    loaded = load_model(args.checkpoint, args.model, device, args.data)
    if not loaded.quantized:
        raise CheckpointError(f"{args.checkpoint} is not quantised; run `mixq quantize` first")
    teacher = _teacher(loaded, args.weights) if config.distill != "none" else None
    spec = loaded.spec
    train_loader = spec.train_loader(
        args.batch_size, root=args.data_dir, limit=args.train_images, seed=config.seed
    )
    # Rank 0 alone evaluates (and broadcasts the metrics): the others need no test set.
    test_loader = (
        spec.loader("test", args.batch_size, root=args.data_dir, limit=args.eval_images)
        if ranks.is_main
        else None
    )
    result = train(
        loaded.model,
        train_loader,
        config,
        teacher=teacher,
        evaluate=lambda model: {"top1": top1(model, test_loader)},
        output_dir=out,
        resume=args.resume,
        progress=not args.quiet,
    )
    if not ranks.is_main:
        barrier()  # until rank 0 has written the result
        return 0
    extra = {**loaded.extra, "train": config.to_dict(), **result.final_metrics}
    if ranks.distributed:
        extra["train_processes"] = ranks.world
    try:  # a non-finite model is refused here: the other ranks must not wait for it
        save_quantized(loaded.model, out / QUANTIZED_NAME, extra=extra)
    finally:
        barrier()
    if result.history:  # each epoch was logged as it ended; the result once
        last = result.history[-1]
        print(
            f"trained to epoch {last.epoch}: loss {last.train_loss:.4f}, "
            f"top-1 {last.metrics.get('top1', float('nan')):.4f}"
        )
    log.info("wrote %s", out / QUANTIZED_NAME)
    return 0


def _teacher(loaded: LoadedModel, weights: Path | None) -> nn.Module:
    path = weights or loaded.extra.get("float_weights")
    if path is None:
        raise CheckpointError("--distill needs the float model: pass --weights")
    device = next(loaded.model.parameters()).device
    return load_float_weights(loaded.spec.build(), Path(path)).to(device)
