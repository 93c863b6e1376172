"""Learning-rate schedule: linear warm-up, then cosine decay to zero (per step)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """The learning-rate multiplier at ``step`` (0-based).

    >>> [round(warmup_cosine(s, 10, 2), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
