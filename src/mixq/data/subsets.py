"""What every data set shares: the split names and class-balanced subsets (no torch)."""

from __future__ import annotations

from typing import Literal

import numpy as np

Split = Literal["train", "test"]


def class_balanced_order(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Return a seeded permutation whose every prefix holds the classes in equal shares.

    Each sample gets a random rank within its class; samples are then ordered by rank
    divided by class size (with random tie-breaking), so with equal class sizes the first
    ``k * num_classes`` indices hold exactly ``k`` of each class.

    >>> order = class_balanced_order(np.array([0, 0, 1, 1, 2, 2]), seed=1)
    >>> sorted(np.array([0, 0, 1, 1, 2, 2])[order[:3]].tolist())
    [0, 1, 2]
    """
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels), dtype=np.float64)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        ranks = rng.permutation(len(members))
        keys[members] = (ranks + rng.random(len(members))) / len(members)
    return np.argsort(keys, kind="stable")
