"""Exact interval arithmetic for the integer ONNX graph: per row, the constant that makes
ONNX's truncating integer ``Div`` a floor, the proof that no int64 intermediate overflows,
and the choice of 8-bit ONNX types for a layer's input levels and weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from mixq.errors import IntegerConversionError

INT64_MAX = 2**63 - 1
# x86 kernels without VNNI multiply u8 by s8 with vpmaddubsw, which adds pairs of products
# in int16 with saturation; a pair sum at most this large never saturates.
_PAIR_SUM_LIMIT = 2**15 - 1
UINT8_ZERO = 128  # zero point of signed levels moved into uint8


@dataclass(frozen=True)
class RowPlan:
    """One row's ``floor((x*m + offset + half) / d)``, ``d = 2^c``, as ONNX computes it.

    Proof of exactness: with ``y = x*m + offset + half`` (``m >= 0``) in ``[y_lo, y_hi]``,
    ``T = k*d`` with ``k = max(0, -floor(y_lo / d))`` makes ``y + T >= 0``, so ONNX's
    truncating ``Div`` floors; ``T`` is a multiple of ``d``, so ``floor((y + T) / d) - k =
    floor(y / d)``. ``proven`` says every int64 intermediate (``x*m``, ``offset + half + T``,
    ``y + T``) lies within int64 for every input in ``[low, high]``.
    """

    multiplier: int
    add: int  # offset + half
    add_biased: int  # offset + half + T
    divisor: int
    k: int
    out_low: int
    out_high: int
    proven: bool

    @classmethod
    def make(cls, low: int, high: int, m: int, c: int, offset: int) -> RowPlan:
        m, c, offset = strip_twos(m, c, offset)
        d = 1 << c
        half = d >> 1
        y_low, y_high = low * m + offset + half, high * m + offset + half
        k = max(0, -(y_low // d))
        add_biased = offset + half + k * d
        proven = (
            max(abs(low), abs(high)) * m <= INT64_MAX
            and y_high + k * d <= INT64_MAX
            and abs(add_biased) <= INT64_MAX
        )
        return cls(m, offset + half, add_biased, d, k, y_low // d, y_high // d, proven)


def strip_twos(m: int, c: int, offset: int) -> tuple[int, int, int]:
    """The same ``round((x*m + offset) / 2^c)`` with the powers of two that ``m`` and
    ``offset`` share with ``2^c`` cancelled, so products stay small (``1/64`` is ``m = 2^30,
    c = 36`` in the engine, ``m = 1, c = 6`` here). Exact: with ``m = 2^t m'`` and
    ``offset = 2^t o'`` (``t <= c``), ``x*m + offset + 2^(c-1) = 2^t (x m' + o' + 2^(c-t-1))``
    for ``t < c``, and for ``t = c`` the half of ``2^c`` is below one output step."""
    t = min(twos(m), twos(offset), c)
    return m >> t, c - t, offset >> t


def twos(value: int) -> int:
    """Trailing zero bits of ``value`` (a large number for zero, which has all of them)."""
    return (value & -value).bit_length() - 1 if value else 1 << 30


def spread(values: list[int], rows: int) -> list[int]:
    return [int(v) for v in values] * rows if len(values) == 1 else [int(v) for v in values]


def input_zero_point(low: int, high: int, layer: str) -> int:
    """0 for levels that fit uint8 as they are, 128 for signed levels that fit int8."""
    if low >= 0 and high <= 255:
        return 0
    if low >= -UINT8_ZERO and high <= 127:
        return UINT8_ZERO
    raise IntegerConversionError(
        f"layer {layer!r}: input levels span [{low}, {high}], more than 8 bits; "
        "ConvInteger/MatMulInteger take 8-bit inputs"
    )


def weights_signed(weight: Tensor, x_max: int) -> bool:
    """Whether u8*s8 kernels run this layer exactly: x86 CPUs without VNNI add two u8*s8
    products in int16 with saturation, so int8 weights need ``2 * x_max * |w|max`` below
    2^15 (onnxruntime's documented "reduce range" concern); otherwise the weights go to
    uint8 with zero point 128, whose u8*u8 kernels widen to int16 first and are exact."""
    return 2 * x_max * int(weight.abs().max()) <= _PAIR_SUM_LIMIT


def weight_arrays(weight: Tensor, x_max: int) -> tuple[np.ndarray, np.ndarray]:
    values = weight.numpy()
    if weights_signed(weight, x_max):
        return values.astype(np.int8), np.array(0, dtype=np.int8)
    return (values + UINT8_ZERO).astype(np.uint8), np.array(UINT8_ZERO, dtype=np.uint8)


def accumulator_bounds(weight: Tensor, low: int, high: int) -> tuple[list[int], list[int]]:
    """Exact per-row extremes of ``sum_j x_j * w_rj`` for inputs in ``[low, high]``."""
    rows = weight.reshape(weight.shape[0], -1)
    positive = rows.clamp_min(0).sum(dim=1).tolist()
    negative = rows.clamp_max(0).sum(dim=1).tolist()
    lows = [low * p + high * n for p, n in zip(positive, negative, strict=True)]
    highs = [high * p + low * n for p, n in zip(positive, negative, strict=True)]
    return lows, highs
