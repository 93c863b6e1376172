"""Quantisation-aware training (and plain fine-tuning): one loop for float and quantised models.

Each epoch ends with an atomic checkpoint (model, optimiser, schedule, RNG state (the CPU's,
and the GPU's for a model on CUDA), history)
and one JSON line of metrics. ``resume=True`` continues from the last checkpoint and gives
bit for bit what an uninterrupted run gives: model-side randomness is restored from the
checkpoint and data-side randomness is a function of ``(seed, epoch)`` (see
:mod:`mixq.data.epochs`). A finished run can be extended: resume with a larger ``epochs``
(every other option the same) and training continues from the last epoch, with the
warm-up/cosine schedule recomputed for the new total (so the learning rate rises again from
where the longer schedule stands at that step).

A non-finite loss or weight stops training at once with
:class:`~mixq.errors.TrainingDivergedError` naming the epoch and step; nothing is saved
from a diverged model (every save goes through one finite check).

Under ``torchrun`` (an initialised ``torch.distributed`` process group of N > 1), every
process calls :func:`train` with the same model, loader and config: the model runs in
DistributedDataParallel (:mod:`mixq.train.replicas`), the loader is sharded
(:mod:`mixq.train.sharding`: the global batch is the loader's batch times N), rank 0
alone shows progress, logs, evaluates (the metrics are broadcast) and writes the
checkpoint and metrics while the others wait at a barrier. The checkpoint holds the bare
model's state (no ``module.`` prefix) and the number of epochs done, the global position
in the data, so it resumes under any number of processes; with another number of
processes an epoch has another number of steps, and the schedule continues from the
same epoch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from mixq.calibrate import model_device
from mixq.data.epochs import set_epoch
from mixq.distributed_env import Ranks, barrier, broadcast_from_main
from mixq.errors import CheckpointError, DataError, TrainConfigError
from mixq.io import atomic_write, atomic_write_text
from mixq.nn.layers import QuantConv2d
from mixq.train.config import TrainConfig
from mixq.train.guard import check_finite_step, require_finite_model
from mixq.train.replicas import mean_over_ranks, replicate
from mixq.train.schedule import warmup_cosine
from mixq.train.sharding import shard_loader

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"

TaskLoss = Callable[[Any, Any], Tensor]
Evaluate = Callable[[nn.Module], dict[str, float]]

log = logging.getLogger("mixq.train")


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's batches
    lr: float  # learning rate at the epoch's last step
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    history: list[EpochRecord]
    output_dir: Path | None

    @property
    def final_metrics(self) -> dict[str, float]:
        return self.history[-1].metrics if self.history else {}


def train(
    model: nn.Module,
    train_loader: Iterable[Any],
    config: TrainConfig,
    *,
    teacher: nn.Module | None = None,
    task_loss: TaskLoss | None = None,
    evaluate: Evaluate | None = None,
    output_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune ``model`` in place on ``train_loader`` and return the per-epoch history.

    Batches are ``(inputs, targets)`` pairs (``task_loss(outputs, targets)``, cross-entropy
    by default) or dicts of keyword inputs (a ``labels`` entry, if any, is the target).
    ``teacher`` (usually the float model) is needed for ``config.distill``.
    """
    if config.distill != "none" and teacher is None:
        raise TrainConfigError(f"distill={config.distill!r} needs a teacher model")
    _check_dataset_labels(train_loader)
    ranks = Ranks.current()
    train_loader = shard_loader(train_loader, rank=ranks.rank, world=ranks.world)
    steps_per_epoch = _count_batches(train_loader)
    out = Path(output_dir) if output_dir is not None else None
    torch.manual_seed(config.seed)
    optimizer = _make_optimizer(model, config)
    total = steps_per_epoch * config.epochs
    warmup = round(config.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total, warmup)
    )
    history: list[EpochRecord] = []
    if resume and out is not None and (out / CHECKPOINT_NAME).is_file():
        history = _restore(out, model, optimizer, scheduler, config, steps_per_epoch)
        if ranks.is_main:
            log.info("resumed from %s after epoch %d", out / CHECKPOINT_NAME, len(history))
    if out is not None and ranks.is_main:
        _rewrite_metrics(out, history)
    loss_fn = task_loss or _cross_entropy
    if teacher is not None:
        teacher.eval()
    runner = replicate(model)  # the model itself in one process
    progress = progress and ranks.is_main
    for epoch in range(len(history), config.epochs):
        start = time.perf_counter()
        _set_bn_mode(runner, config, epoch)
        set_epoch(train_loader, epoch)
        mean_loss = _run_epoch(
            runner,
            train_loader,
            config,
            optimizer,
            scheduler,
            teacher,
            loss_fn,
            epoch,
            steps_per_epoch,
            progress,
        )
        record = _epoch_record(model, evaluate, epoch, mean_loss, scheduler, start, ranks)
        history.append(record)
        if ranks.is_main:
            log.info("%s", _epoch_line(record, config.epochs))
        if out is not None:
            if ranks.is_main:
                _save(out, model, optimizer, scheduler, config, history, steps_per_epoch)
                _append_metrics(out, record)
            barrier()  # nobody reads or leaves before rank 0's checkpoint is complete
    return TrainResult(history, out)


def _epoch_record(
    model: nn.Module,
    evaluate: Evaluate | None,
    epoch: int,
    mean_loss: float,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    start: float,
    ranks: Ranks,
) -> EpochRecord:
    """The epoch's record; under torchrun rank 0 evaluates (the bare model: no collective
    in its forward) and every rank returns rank 0's record, with the loss averaged over
    the ranks' shards."""
    if not ranks.distributed:
        metrics = _evaluate(model, evaluate)
        lr = float(scheduler.get_last_lr()[0])
        return EpochRecord(epoch + 1, mean_loss, lr, time.perf_counter() - start, metrics)
    mean_loss = mean_over_ranks(mean_loss, model_device(model))
    record = None
    if ranks.is_main:
        metrics = _evaluate(model, evaluate)
        lr = float(scheduler.get_last_lr()[0])
        record = EpochRecord(epoch + 1, mean_loss, lr, time.perf_counter() - start, metrics)
    shared = broadcast_from_main(record)
    assert shared is not None  # rank 0 always builds one
    return shared


def _epoch_line(record: EpochRecord, epochs: int) -> str:
    """The log line of one finished epoch: its loss, then its metrics if it has any.

    >>> _epoch_line(EpochRecord(2, 0.768, 0.01, 1.5, {"top1": 0.81}), 3)
    'epoch 2/3 loss 0.7680 top1 0.8100'
    >>> _epoch_line(EpochRecord(2, 0.768, 0.01, 1.5), 3)
    'epoch 2/3 loss 0.7680'
    """
    parts = [f"epoch {record.epoch}/{epochs} loss {record.train_loss:.4f}"]
    parts += [f"{name} {value:.4f}" for name, value in record.metrics.items()]
    return " ".join(parts)


def _run_epoch(
    model: nn.Module,
    loader: Iterable[Any],
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    teacher: nn.Module | None,
    loss_fn: TaskLoss,
    epoch: int,
    steps: int,
    progress: bool,
) -> float:
    device = model_device(model)
    losses: list[float] = []
    bar = tqdm(
        loader,
        total=steps,
        desc=f"epoch {epoch + 1}/{config.epochs}",
        disable=None if progress else True,
        leave=False,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    for step, batch in enumerate(bar, start=1):
        inputs, targets = _split_batch(batch, device)
        outputs = _forward(model, inputs)
        if loss_fn is _cross_entropy:
            _check_labels(outputs, targets, epoch, step)
        loss = _loss(outputs, targets, inputs, config, teacher, loss_fn, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(check_finite_step(loss, params, epoch + 1, step))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return sum(losses) / max(len(losses), 1)


def _loss(
    outputs: Any,
    targets: Any,
    inputs: Any,
    config: TrainConfig,
    teacher: nn.Module | None,
    loss_fn: TaskLoss,
    device: torch.device,
) -> Tensor:
    loss = outputs.new_zeros(()) if torch.is_tensor(outputs) else torch.zeros((), device=device)
    if config.task_weight > 0 and targets is not None:
        loss = loss + config.task_weight * loss_fn(outputs, targets)
    if config.distill != "none" and teacher is not None:
        with torch.no_grad():
            reference = _forward(teacher, inputs)
        loss = loss + config.distill_weight * _distill_loss(outputs, reference, config)
    return loss


def _distill_loss(student: Tensor, teacher: Tensor, config: TrainConfig) -> Tensor:
    if config.distill == "logits":
        t = config.temperature
        return (
            F.kl_div(
                F.log_softmax(student / t, dim=-1),
                F.log_softmax(teacher / t, dim=-1),
                reduction="batchmean",
                log_target=True,
            )
            * t
            * t
        )
    return F.mse_loss(student, teacher)


def _cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets)


_IGNORE_INDEX = -100  # F.cross_entropy's default: targets with this value are skipped


def _check_labels(outputs: Any, targets: Any, epoch: int, step: int) -> None:
    """Class labels in ``0..classes-1`` (checked before the batch can touch the weights)."""
    if not (torch.is_tensor(outputs) and torch.is_tensor(targets)) or targets.numel() == 0:
        return
    if targets.is_floating_point() or outputs.dim() < 2:
        return  # class probabilities, or not a classification output
    classes = outputs.shape[1]
    labels = targets[targets != _IGNORE_INDEX]
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise DataError(
            f"epoch {epoch + 1}, step {step}: label {bad} is outside 0..{classes - 1} "
            f"(the model has {classes} outputs)"
        )


def _split_batch(batch: Any, device: torch.device) -> tuple[Any, Any]:
    if isinstance(batch, dict):
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        return inputs, inputs.pop("labels", None)
    if isinstance(batch, list | tuple):
        targets = batch[1].to(device) if len(batch) > 1 else None
        return batch[0].to(device), targets
    return batch.to(device), None


def _forward(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def _check_dataset_labels(loader: Iterable[Any]) -> None:
    """Labels a data set holds as a tensor (``loader.dataset.tensors`` or ``.targets``) must
    not be negative (except the ignore index): refused before any training."""
    dataset = getattr(loader, "dataset", None)
    labels = getattr(dataset, "targets", None)
    tensors = getattr(dataset, "tensors", None)
    if labels is None and isinstance(tensors, tuple) and len(tensors) > 1:
        labels = tensors[1]
    if labels is None:
        return
    values = torch.as_tensor(labels)
    if values.is_floating_point() or values.numel() == 0:
        return
    kept = values[values != _IGNORE_INDEX]
    low = int(kept.min()) if kept.numel() else 0
    if low < 0:
        raise DataError(f"the training data holds label {low}: class labels must be >= 0")


def _count_batches(loader: Iterable[Any]) -> int:
    try:
        count = len(loader)  # type: ignore[arg-type]
    except TypeError:
        raise TrainConfigError(
            "the training loader must have a length (a DataLoader or list)"
        ) from None
    if count == 0:
        raise TrainConfigError("the training loader is empty")
    return count


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # Clip levels, biases and norm parameters are 0-/1-D: decaying them only shrinks ranges.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=False)


def _set_bn_mode(model: nn.Module, config: TrainConfig, epoch: int) -> None:
    model.train()
    frozen_late = config.freeze_bn_epoch is not None and epoch >= config.freeze_bn_epoch
    frozen = not config.bn_batch_stats or frozen_late
    for module in model.modules():
        if isinstance(module, QuantConv2d):
            module.bn_frozen = frozen
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and frozen:
            module.eval()  # a float model's BN: use and keep its running statistics


def _evaluate(model: nn.Module, evaluate: Evaluate | None) -> dict[str, float]:
    if evaluate is None:
        return {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return {k: float(v) for k, v in evaluate(model).items()}
    finally:
        model.train(was_training)


def _save(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    history: list[EpochRecord],
    steps_per_epoch: int,
) -> None:
    require_finite_model(model, f"{out / CHECKPOINT_NAME}")
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "config": config.to_dict(),
        "history": [asdict(r) for r in history],
        # The position is the epochs done (len(history)), in global terms; the steps an
        # epoch took tell a resume under another number of processes to re-place the
        # schedule.
        "steps_per_epoch": steps_per_epoch,
        "processes": Ranks.current().world,
    }
    device = model_device(model)
    if device.type == "cuda":  # dropout on a GPU draws from that device's own generator
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    atomic_write(out / CHECKPOINT_NAME, lambda tmp: torch.save(state, tmp))


def _restore(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    steps_per_epoch: int,
) -> list[EpochRecord]:
    path = out / CHECKPOINT_NAME
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        _check_resumable(path, state["config"], config, len(state["history"]))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        device = model_device(model)
        if "cuda_rng" in state and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        history = [EpochRecord(**r) for r in state["history"]]
        saved_steps = state.get("steps_per_epoch", steps_per_epoch)
        if saved_steps != steps_per_epoch:  # another number of processes (or batch size)
            _place_schedule(optimizer, scheduler, len(history) * steps_per_epoch)
            log.info(
                "%s took %d steps an epoch, this run %d (%s processes): the schedule "
                "continues from epoch %d",
                path, saved_steps, steps_per_epoch, Ranks.current().world, len(history),
            )  # fmt: skip
        return history
    except TrainConfigError:
        raise
    except Exception as exc:  # torch.load raises many types on damaged files
        raise CheckpointError(f"cannot resume from {path}: {exc}") from None


def _place_schedule(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, step: int
) -> None:
    """Put the warm-up/cosine schedule at ``step`` of this run's steps, learning rates too."""
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    scheduler.last_epoch = step
    for group, base, factor in zip(
        optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * factor(step)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _check_resumable(path: Path, saved: dict[str, Any], config: TrainConfig, done: int) -> None:
    """Only ``epochs`` may change on resume, and not below the epochs already trained."""
    current = config.to_dict()
    changed = sorted(k for k, v in current.items() if k != "epochs" and saved.get(k) != v)
    if changed:
        raise TrainConfigError(
            f"{path} was written with a different configuration (differs in {changed}); "
            "resume with the same configuration (only epochs may grow) or start a new "
            "output folder"
        )
    if config.epochs < done:
        raise TrainConfigError(
            f"{path} has already trained {done} epochs; resume with epochs >= {done} "
            f"(got {config.epochs})"
        )


def _rewrite_metrics(out: Path, history: list[EpochRecord]) -> None:
    # Lines past the checkpoint (an epoch that was killed mid-write) are dropped.
    text = "".join(json.dumps(asdict(r)) + "\n" for r in history)
    atomic_write_text(out / METRICS_NAME, text)


def _append_metrics(out: Path, record: EpochRecord) -> None:
    with (out / METRICS_NAME).open("a") as handle:
        handle.write(json.dumps(asdict(record)) + "\n")
