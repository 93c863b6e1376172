"""Epoch-seeded randomness, so that a training run resumed at an epoch boundary sees exactly
the batches an uninterrupted run would have seen.

Anything random in a data pipeline (order, augmentation) draws from a generator seeded by
``(seed, epoch)``; the trainer calls :func:`set_epoch` on the loader before each epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator whose state depends only on ``(seed, epoch)``."""
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    return torch.Generator().manual_seed(mixed)


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(size)`` that is a function of ``(seed, epoch)``."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        yield from torch.randperm(
            self.size, generator=epoch_generator(self.seed, self.epoch)
        ).tolist()

    def __len__(self) -> int:
        return self.size


def set_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the loader and the parts of it that have one."""
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    parts = [
        loader,
        sampler,
        getattr(sampler, "sampler", None),  # a BatchSampler passed as the sampler
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
        getattr(loader, "dataset", None),
    ]
    seen: set[int] = set()
    for part in parts:
        if part is not None and id(part) not in seen and hasattr(part, "set_epoch"):
            seen.add(id(part))
            part.set_epoch(epoch)
