"""Dyadic numbers ``m / 2^c`` and rounding shifts: how an integer engine multiplies by a real.

Every real scale ratio of the integer model (input step times weight step over output step,
a residual branch's rescale, the 1/N of average pooling) is replaced at conversion time by
an integer multiplier ``m < 2^31`` and a right shift ``c``; at run time only ``x * m``, an
add and an arithmetic shift remain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mixq.errors import SchemeError

MULTIPLIER_BITS = 31
"""A multiplier is below ``2^31``, so ``int32 * multiplier`` fits an int64 product."""

MAX_SHIFT = 62


@dataclass(frozen=True)
class Dyadic:
    """Per-channel multipliers and shifts: ``value[i] ~= multiplier[i] / 2^shift[i]``.

    >>> d = Dyadic.from_values([0.75, 1e-3])
    >>> d.multiplier.tolist(), d.shift.tolist()
    ([1610612736, 1099511628], [31, 40])
    >>> float(d.relative_error([0.75, 1e-3]).max()) < 2.0**-31
    True
    """

    multiplier: np.ndarray  # int64, each in [2^30, 2^31] (or 0 for a zero value)
    shift: np.ndarray  # int64, each in 0..MAX_SHIFT

    @classmethod
    def from_values(
        cls, values: np.ndarray | list[float] | float, bits: int = MULTIPLIER_BITS
    ) -> Dyadic:
        """The closest ``m / 2^c`` with a ``bits``-bit ``m`` to each non-negative value."""
        array = np.atleast_1d(np.asarray(values, dtype=np.float64))
        if not np.isfinite(array).all() or (array < 0).any():
            raise SchemeError(f"dyadic values must be finite and non-negative, got {array}")
        multiplier = np.zeros(array.shape, dtype=np.int64)
        shift = np.zeros(array.shape, dtype=np.int64)
        for index, value in np.ndenumerate(array):
            multiplier[index], shift[index] = _one(float(value), bits)
        return cls(multiplier, shift)

    def values(self) -> np.ndarray:
        """The exact reals the multipliers and shifts stand for."""
        return self.multiplier.astype(np.float64) * np.exp2(-self.shift.astype(np.float64))

    def relative_error(self, values: np.ndarray | list[float]) -> np.ndarray:
        """``|m / 2^c - v| / v`` for each value (0 where ``v`` is 0)."""
        target = np.asarray(values, dtype=np.float64)
        error = np.abs(self.values() - target)
        return np.divide(error, target, out=np.zeros_like(error), where=target > 0)


def _one(value: float, bits: int) -> tuple[int, int]:
    if value == 0.0:
        return 0, 0
    # value = f * 2^e with f in [0.5, 1): m = round(f * 2^bits), c = bits - e.
    fraction, exponent = math.frexp(value)
    shift = bits - exponent
    if shift > MAX_SHIFT:
        return 0, 0  # below 2^-(MAX_SHIFT - bits) of one unit: nothing after rounding
    if shift < 0:
        raise SchemeError(f"scale ratio {value} is too large for a {bits}-bit dyadic multiplier")
    return round(fraction * 2**bits), shift


def rounding_half(shift: Tensor) -> Tensor:
    """``2^(shift - 1)`` where ``shift > 0``, else 0: what makes ``>> shift`` round half up."""
    return torch.where(shift > 0, 1 << (shift - 1).clamp_min(0), 0)


def rounding_shift(x: Tensor, shift: Tensor | int) -> Tensor:
    """``round(x / 2^shift)`` with ties rounded up, by an add and an arithmetic right shift.

    >>> rounding_shift(torch.tensor([5, 6, -5, -6, 7]), 2)
    tensor([ 1,  2, -1, -1,  2])
    """
    shift_tensor = torch.as_tensor(shift, dtype=torch.int64, device=x.device)
    return (x + rounding_half(shift_tensor)) >> shift_tensor


def dyadic_multiply(
    x: Tensor, multiplier: Tensor, shift: Tensor, offset: Tensor | int = 0
) -> Tensor:
    """``round((x * multiplier + offset) / 2^shift)`` in int64: a requantisation step.

    ``offset`` carries a bias already expressed in units of ``2^-shift`` output steps.

    >>> d = Dyadic.from_values(0.1)
    >>> m, c = torch.tensor(d.multiplier), torch.tensor(d.shift)
    >>> dyadic_multiply(torch.tensor([10, 14, 16, -16, 1000]), m, c)
    tensor([  1,   1,   2,  -2, 100])
    """
    return rounding_shift(x * multiplier + offset, shift)
