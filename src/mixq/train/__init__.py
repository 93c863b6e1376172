"""Quantisation-aware training: :func:`train` with a :class:`TrainConfig`."""

from mixq.errors import TrainConfigError, TrainingDivergedError
from mixq.train.config import TrainConfig
from mixq.train.loop import EpochRecord, TrainResult, train

__all__ = [
    "EpochRecord",
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "TrainingDivergedError",
    "train",
]
