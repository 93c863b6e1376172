"""Quantisation schemes and the (scheme, bits) candidates a row can take."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from mixq.errors import SchemeError


class Scheme(StrEnum):
    """The number system of a row's magnitudes (see SPEC section 1)."""

    FIXED = "fixed"  # uniform levels: a multiplier (FPGA DSP)
    POT = "pot"  # powers of two: one shift
    SP2 = "sp2"  # sums of two powers of two: two shifts and an add (FPGA LUTs)


# Inclusive bit ranges (sign bit included). SP2 needs at least one bit for each of its terms.
BITS_RANGE: dict[Scheme, tuple[int, int]] = {
    Scheme.FIXED: (2, 8),
    Scheme.POT: (2, 8),
    Scheme.SP2: (3, 8),
}

_CANDIDATE_PATTERN = re.compile(r"^\s*(fixed|pot|sp2)-?(\d+)\s*$", re.IGNORECASE)


def parse_scheme(name: str | Scheme) -> Scheme:
    """The scheme called ``name`` (``"fixed"``, ``"pot"`` or ``"sp2"``)."""
    try:
        return Scheme(str(name).lower())
    except ValueError:
        known = ", ".join(s.value for s in Scheme)
        raise SchemeError(f"unknown scheme {name!r}; known schemes: {known}") from None


@dataclass(frozen=True, order=True)
class Candidate:
    """One (scheme, bits) choice for a row, written ``"sp2-4"``, ``"fixed-8"``, ``"pot-4"``.

    >>> Candidate.parse("sp2-4")
    Candidate(scheme=<Scheme.SP2: 'sp2'>, bits=4)
    >>> str(Candidate(Scheme.FIXED, 8))
    'fixed-8'
    """

    scheme: Scheme
    bits: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "scheme", parse_scheme(self.scheme))
        low, high = BITS_RANGE[self.scheme]
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise SchemeError(f"bits must be an integer, got {self.bits!r}")
        if not low <= self.bits <= high:
            raise SchemeError(f"{self.scheme.value} supports {low}..{high} bits, got {self.bits}")

    @classmethod
    def parse(cls, text: str | Candidate) -> Candidate:
        """Parse ``"fixed-4"``, ``"fixed4"``, ``"pot-4"`` or ``"sp2-4"`` (case-insensitive)."""
        if isinstance(text, Candidate):
            return text
        match = _CANDIDATE_PATTERN.match(str(text))
        if match is None:
            raise SchemeError(
                f"cannot parse candidate {text!r}; write scheme-bits such as "
                "'fixed-4', 'pot-4' or 'sp2-4'"
            )
        return cls(parse_scheme(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.scheme.value}-{self.bits}"
