"""Quantisation-aware training: :func:`train` with a :class:`TrainConfig`."""

from mixq.train.config import TrainConfig, TrainConfigError
from mixq.train.loop import EpochRecord, TrainResult, train

__all__ = ["EpochRecord", "TrainConfig", "TrainConfigError", "TrainResult", "train"]
