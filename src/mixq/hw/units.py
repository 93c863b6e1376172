"""The multiply-accumulate units of ``hardware/rtl``: what each computes, bit for bit.

One :class:`MacUnit` is one Verilog module with its parameters: a weight candidate
(``fixed-k``, ``pot-k`` or ``sp2-k``) times an unsigned ``act_bits`` activation, summed into
a signed accumulator. Its weight codes and the integer each code multiplies by come from
mixq's grids (SPEC section 1), so the simulation can check the hardware against them and
the synthesis script can size the accumulator. Nothing here needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from mixq.errors import HardwareCostError
from mixq.grids import integer_magnitudes, sp2_term_bits
from mixq.schemes import Candidate, Scheme

# Accumulator headroom over one product: ResNet-18's longest row, 512 * 3 * 3 = 4608 MACs,
# needs ceil(log2(4608)) = 13 bits so that no dot product can overflow.
ACC_GUARD_BITS = 13

MODULES: dict[Scheme, str] = {
    Scheme.FIXED: "fixed_mac",
    Scheme.POT: "pot_mac",
    Scheme.SP2: "sp2_mac",
}


@dataclass(frozen=True, order=True)
class MacUnit:
    """One MAC unit: ``candidate`` weights times unsigned ``act_bits`` activations.

    >>> unit = MacUnit(Candidate.parse("sp2-4"), act_bits=4)
    >>> unit.key, unit.module, unit.product_bits, unit.acc_bits
    ('sp2-4/a4', 'sp2_mac', 8, 21)
    >>> sorted({abs(v) for _, v in unit.weight_codes()})
    [0, 1, 2, 4, 5, 6, 8]
    """

    candidate: Candidate
    act_bits: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidate", Candidate.parse(self.candidate))
        if isinstance(self.act_bits, bool) or not 1 <= int(self.act_bits) <= 16:
            raise HardwareCostError(f"activation bits must be 1..16, got {self.act_bits!r}")

    @classmethod
    def parse(cls, key: str) -> MacUnit:
        """From ``"sp2-4/a8"``."""
        candidate, sep, act = key.partition("/a")
        if not sep or not act.isdigit():
            raise HardwareCostError(f"cannot parse MAC unit {key!r}; write e.g. 'sp2-4/a8'")
        return cls(Candidate.parse(candidate), int(act))

    @property
    def key(self) -> str:
        return f"{self.candidate}/a{self.act_bits}"

    @property
    def module(self) -> str:
        return MODULES[self.candidate.scheme]

    @property
    def weight_bits(self) -> int:
        return self.candidate.bits

    @property
    def max_magnitude(self) -> int:
        """The largest integer a weight multiplies by (its grid's 1 times the denominator)."""
        return integer_magnitudes(self.candidate)[0][-1]

    @property
    def product_bits(self) -> int:
        """Width of the signed product of the largest activation and weight."""
        return ((2**self.act_bits - 1) * self.max_magnitude).bit_length() + 1

    @property
    def acc_bits(self) -> int:
        return self.product_bits + ACC_GUARD_BITS

    def parameters(self) -> dict[str, int]:
        """The Verilog parameters of this unit's module."""
        params = {"A_BITS": self.act_bits, "W_BITS": self.weight_bits, "ACC_BITS": self.acc_bits}
        if self.candidate.scheme is Scheme.SP2:
            params["M2"] = sp2_term_bits(self.weight_bits)[1]
        return params

    def weight_codes(self) -> list[tuple[int, int]]:
        """Every valid weight code and the signed integer it multiplies the activation by."""
        return list(self._codes)

    @cached_property
    def _codes(self) -> tuple[tuple[int, int], ...]:
        bits = self.weight_bits
        sign_bit = 1 << (bits - 1)
        if self.candidate.scheme is Scheme.FIXED:
            # Two's complement; -2^(k-1) is not on the symmetric grid.
            top = sign_bit - 1
            return tuple((value % (1 << bits), value) for value in range(-top, top + 1))
        if self.candidate.scheme is Scheme.POT:
            mags = integer_magnitudes(self.candidate)[0]
            return tuple(
                (sign | index, -mag if sign else mag)
                for sign in (0, sign_bit)
                for index, mag in enumerate(mags)
            )
        first, second = sp2_term_integers(self.candidate)
        m2 = sp2_term_bits(bits)[1]
        return tuple(
            (sign | (c1 << m2) | c2, -(q1 + q2) if sign else q1 + q2)
            for sign in (0, sign_bit)
            for c1, q1 in enumerate(first)
            for c2, q2 in enumerate(second)
        )


def sp2_term_integers(candidate: Candidate) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """SP2's two terms as integers over the grid's denominator ``2^J``, indexed by code.

    Code ``c >= 1`` of a term is ``2^-c`` (SPEC section 1), so ``2^(J - c)`` over ``2^J``
    with ``J = 2^m1 - 1``; code 0 is zero.

    >>> sp2_term_integers(Candidate.parse("sp2-4"))
    ((0, 4, 2, 1), (0, 4))
    """
    if candidate.scheme is not Scheme.SP2:
        raise HardwareCostError(f"{candidate} is not an SP2 candidate")
    m1, m2 = sp2_term_bits(candidate.bits)
    finest = 2**m1 - 1
    first = (0, *(2 ** (finest - c) for c in range(1, 2**m1)))
    second = (0, *(2 ** (finest - c) for c in range(1, 2**m2)))
    return first, second


def default_units(act_bits: tuple[int, ...] = (4, 8)) -> list[MacUnit]:
    """The units the committed synthesis table holds: every candidate whose hardware is
    sensible (PoT above 5 bits needs shifts past 30 positions) at each activation width."""
    names = (
        [f"fixed-{k}" for k in range(2, 9)]
        + [f"pot-{k}" for k in range(2, 6)]
        + [f"sp2-{k}" for k in range(3, 9)]
    )
    return [MacUnit(Candidate.parse(n), a) for a in act_bits for n in names]
