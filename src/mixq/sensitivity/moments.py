"""Running means and standard errors of per-row Hutchinson samples (numpy, float64)."""

from __future__ import annotations

import math

import numpy as np

from mixq.sensitivity.config import HutchinsonConfig


class RowSampleStats:
    """Samples of a layer's per-row estimates, ``(rows,)`` each, and of their sum.

    >>> stats = RowSampleStats(rows=2)
    >>> for sample in ([1.0, 3.0], [3.0, 5.0]):
    ...     stats.add(np.array(sample))
    >>> stats.row_means().tolist(), stats.mean(), stats.stderr()
    ([2.0, 4.0], 6.0, 2.0)
    """

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.count = 0
        self._sum = np.zeros(rows)
        self._sumsq = np.zeros(rows)
        self._total = 0.0
        self._total_sq = 0.0
        self._previous_mean = math.nan

    def add(self, sample: np.ndarray) -> None:
        self._previous_mean = self.mean() if self.count else math.nan
        self.count += 1
        self._sum += sample
        self._sumsq += sample**2
        total = float(sample.sum())
        self._total += total
        self._total_sq += total**2

    def mean(self) -> float:
        return self._total / self.count

    def row_means(self) -> np.ndarray:
        return self._sum / self.count

    def stderr(self) -> float:
        return float(_stderr(np.array([self._total]), np.array([self._total_sq]), self.count)[0])

    def row_stderr(self) -> np.ndarray:
        return _stderr(self._sum, self._sumsq, self.count)

    def score(self, config: HutchinsonConfig) -> float:
        """The stopping statistic: relative standard error, or relative change of the mean."""
        if self.count < 2:
            return math.inf
        if config.stop_on == "stderr":
            return _relative(self.stderr(), abs(self.mean()))
        return _relative(abs(self.mean() - self._previous_mean), abs(self._previous_mean))

    def done(self, config: HutchinsonConfig) -> bool:
        if self.count >= config.max_probes:
            return True
        return self.count >= config.min_probes and self.score(config) <= config.tolerance

    def converged(self, config: HutchinsonConfig) -> bool:
        return self.count >= config.min_probes and self.score(config) <= config.tolerance


def _relative(spread: float, size: float) -> float:
    """``spread / size``; 0 when both are 0 (a layer off the loss's path has trace 0)."""
    if size > 0:
        return spread / size
    return 0.0 if spread == 0 else math.inf


def _stderr(total: np.ndarray, total_sq: np.ndarray, n: int) -> np.ndarray:
    if n < 2:
        return np.full(total.shape, np.inf)
    # Unbiased variance from the sums, clipped at 0 against rounding below zero.
    variance = np.maximum(total_sq - total**2 / n, 0.0) / (n - 1)
    return np.sqrt(variance / n)
