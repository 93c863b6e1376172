"""Weights as level indices packed into a dense LSB-first bit stream (the packed format's
weight tensors): each integer is its position in its candidate's sorted signed grid, stored
in exactly ``candidate.bits`` bits.

>>> pack_bits(np.array([1, 2, 3]), 4).tolist()  # 0x21, then 0x03 and 4 padding bits
[33, 3]
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from mixq.errors import PackedFormatError
from mixq.grids import integer_magnitudes
from mixq.schemes import Candidate


@cache
def _levels(candidate: Candidate) -> np.ndarray:
    """The candidate's signed integer grid, sorted: level index ``i`` stands for ``[i]``."""
    magnitudes, _ = integer_magnitudes(candidate)
    if max(magnitudes) >= 2**62:
        raise PackedFormatError(f"{candidate} integers do not fit int64")
    grid = np.array(magnitudes, dtype=np.int64)
    levels = np.unique(np.concatenate([-grid, grid]))
    assert len(levels) <= 2**candidate.bits, f"{candidate}: more levels than its bits hold"
    levels.flags.writeable = False  # shared by every caller through the cache
    return levels


def pack_levels(values: np.ndarray, candidate: Candidate) -> np.ndarray:
    """Integers on ``candidate``'s grid as level indices, packed ``candidate.bits`` each."""
    levels = _levels(candidate)
    flat = values.reshape(-1)
    index = np.searchsorted(levels, flat).clip(0, len(levels) - 1)
    if not np.array_equal(levels[index], flat):
        raise PackedFormatError(f"weights off the {candidate} grid cannot be packed")
    return pack_bits(index, candidate.bits)


def unpack_levels(data: np.ndarray, candidate: Candidate, count: int) -> np.ndarray:
    """The ``count`` integers :func:`pack_levels` packed into ``data`` (int64)."""
    levels = _levels(candidate)
    index = unpack_bits(data, candidate.bits, count)
    if count and int(index.max()) >= len(levels):
        raise PackedFormatError(
            f"{candidate} level index {int(index.max())} out of range (grid of {len(levels)})"
        )
    return levels[index]


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Non-negative integers below ``2^bits`` as one LSB-first bit stream, in bytes.

    >>> pack_bits(np.array([1, 2, 3]), 4).tolist()  # 0x21, then 0x03 and 4 padding bits
    [33, 3]
    """
    planes = (values.astype(np.int64)[:, None] >> np.arange(bits)) & 1  # (N, bits)
    return np.packbits(planes.astype(np.uint8).reshape(-1), bitorder="little")


def unpack_bits(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The ``count`` values of ``bits`` bits :func:`pack_bits` wrote (int64)."""
    planes = np.unpackbits(data, count=count * bits, bitorder="little").reshape(count, bits)
    return (planes.astype(np.int64) << np.arange(bits)).sum(axis=1)


def packed_bytes(bits: int, count: int) -> int:
    """Bytes of ``count`` packed values of ``bits`` bits."""
    return math.ceil(bits * count / 8)
