"""Level grids of the three schemes (SPEC section 1): pure functions, no state.

Magnitudes are normalised so the largest is 1; a row's levels are ``alpha * sign * m``.
Each grid is also given exactly as integers over a common denominator, which is what
the integer engine and the hardware use.

Torch-free, so that allocation and the hardware models can use it: the grids as tensors
(:func:`signed_grid`) live in :mod:`mixq.grid_tensors`, and ``mixq.grids.signed_grid``
still resolves there for callers that import it from here.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache
from typing import Any

from mixq.schemes import Candidate, Scheme


def sp2_term_bits(bits: int) -> tuple[int, int]:
    """Bits ``(m1, m2)`` of SP2's two terms: ``m1 + m2 = bits - 1`` and ``m1 >= m2``."""
    m2 = (bits - 1) // 2
    return bits - 1 - m2, m2


@cache
def exact_magnitudes(candidate: Candidate) -> tuple[Fraction, ...]:
    """The grid's magnitudes as exact fractions, ascending, the largest equal to 1.

    >>> [str(m) for m in exact_magnitudes(Candidate.parse("sp2-4"))]
    ['0', '1/8', '1/4', '1/2', '5/8', '3/4', '1']
    >>> [str(m) for m in exact_magnitudes(Candidate.parse("pot-3"))]
    ['0', '1/4', '1/2', '1']
    """
    bits = candidate.bits
    if candidate.scheme is Scheme.FIXED:
        top = 2 ** (bits - 1) - 1
        values = {Fraction(i, top) for i in range(top + 1)}
    elif candidate.scheme is Scheme.POT:
        values = {Fraction(0)} | {Fraction(1, 2**j) for j in range(2 ** (bits - 1) - 1)}
    else:
        m1, m2 = sp2_term_bits(bits)
        first = {Fraction(0)} | {Fraction(1, 2**j) for j in range(1, 2**m1)}
        second = {Fraction(0)} | {Fraction(1, 2**j) for j in range(1, 2**m2)}
        values = {q1 + q2 for q1 in first for q2 in second}
    largest = max(values)
    return tuple(sorted(v / largest for v in values))


def magnitudes(candidate: Candidate) -> tuple[float, ...]:
    """The grid's magnitudes as floats, ascending (see :func:`exact_magnitudes`)."""
    return tuple(float(m) for m in exact_magnitudes(candidate))


@cache
def integer_magnitudes(candidate: Candidate) -> tuple[tuple[int, ...], int]:
    """Magnitudes as integers over one denominator: ``m = integer / denominator`` exactly.

    Fixed-point has denominator ``2^(k-1) - 1``; PoT and SP2 have a power of two, so their
    products are shifts.

    >>> integer_magnitudes(Candidate.parse("fixed-3"))
    ((0, 1, 2, 3), 3)
    >>> integer_magnitudes(Candidate.parse("sp2-4"))
    ((0, 1, 2, 4, 5, 6, 8), 8)
    """
    exact = exact_magnitudes(candidate)
    denominator = 1
    for m in exact:
        denominator = denominator * m.denominator // _gcd(denominator, m.denominator)
    return tuple(int(m * denominator) for m in exact), denominator


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def positive_levels(candidate: Candidate) -> int:
    """Number of non-zero magnitudes (LSQ's ``Q_p``, which scales the step's gradient)."""
    return len(exact_magnitudes(candidate)) - 1


def __getattr__(name: str) -> Any:
    # signed_grid builds tensors; importing torch only when it is asked for keeps this
    # module, and everything torch-free that imports it, free of torch.
    if name == "signed_grid":
        from mixq.grid_tensors import signed_grid

        return signed_grid
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
