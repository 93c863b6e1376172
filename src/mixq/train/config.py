"""Training configuration: one small dataclass, a comment per field, JSON round trip."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from mixq.errors import MixqError


class TrainConfigError(MixqError, ValueError):
    """A training configuration value out of range or unknown."""


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`mixq.train.train` fine-tunes a (quantised) model.

    >>> TrainConfig(epochs=2, lr=0.01).warmup_epochs
    0.0
    """

    epochs: int = 3  # passes over the training loader
    lr: float = 0.01  # peak learning rate, reached after warm-up
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4  # not applied to clip levels, biases and norm parameters
    warmup_epochs: float = 0.0  # linear warm-up, then cosine decay to zero
    grad_clip: float | None = None  # max global gradient norm
    distill: Literal["none", "logits", "outputs"] = "none"  # what to match of the teacher
    distill_weight: float = 1.0  # weight of the distillation term
    task_weight: float = 1.0  # weight of the task loss (0: distillation only)
    temperature: float = 4.0  # logits distillation temperature
    bn_batch_stats: bool = False  # train folded BNs on batch statistics (else running ones)
    freeze_bn_epoch: int | None = None  # from this epoch on, BN statistics are frozen
    seed: int = 0  # model-side randomness (the data has its own (seed, epoch) streams)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.optimizer in ("sgd", "adamw"), f"unknown optimizer {self.optimizer!r}"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be > 0"),
            (self.distill in ("none", "logits", "outputs"), f"unknown distill {self.distill!r}"),
            (self.temperature > 0, "temperature must be > 0"),
            (self.task_weight >= 0 and self.distill_weight >= 0, "loss weights must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainConfigError(f"unknown training option(s) {unknown}")
        return cls(**data)
