"""Training configuration: one small dataclass, a comment per field, JSON round trip.

Every field is checked when the config is built (types included: ``epochs=1.5`` or
``lr=float("inf")`` raise :class:`~mixq.errors.TrainConfigError` naming the field).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from mixq.errors import TrainConfigError

__all__ = ["TrainConfig", "TrainConfigError"]


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
        _integer("epochs", self.epochs, low=1)
        _number("lr", self.lr, positive=True)
        _choice("optimizer", self.optimizer, ("sgd", "adamw"))
        _number("momentum", self.momentum)
        if not self.momentum < 1:
            raise TrainConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        _number("weight_decay", self.weight_decay)
        _number("warmup_epochs", self.warmup_epochs)
        if self.grad_clip is not None:
            _number("grad_clip", self.grad_clip, positive=True)
        _choice("distill", self.distill, ("none", "logits", "outputs"))
        _number("distill_weight", self.distill_weight)
        _number("task_weight", self.task_weight)
        _number("temperature", self.temperature, positive=True)
        if not isinstance(self.bn_batch_stats, bool):
            raise TrainConfigError(
                f"bn_batch_stats must be true or false, got {self.bn_batch_stats!r}"
            )
        if self.freeze_bn_epoch is not None:
            _integer("freeze_bn_epoch", self.freeze_bn_epoch, low=0)
        _integer("seed", self.seed, low=0)
        if self.task_weight == 0 and (self.distill == "none" or self.distill_weight == 0):
            raise TrainConfigError("task_weight and the distillation weight are both 0: no loss")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        if not isinstance(data, Mapping):
            raise TrainConfigError(f"training options must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainConfigError(f"unknown training option(s) {unknown}")
        return cls(**data)


def _integer(name: str, value: object, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrainConfigError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise TrainConfigError(f"{name} must be >= {low}, got {value}")


def _number(name: str, value: object, *, positive: bool = False) -> None:
    """A finite real >= 0 (> 0 when ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TrainConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise TrainConfigError(f"{name} must be finite, got {value}")
    if value < 0 or (positive and value == 0):
        raise TrainConfigError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value}")


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise TrainConfigError(f"unknown {name} {value!r}; one of {', '.join(choices)}")
