"""A ratio of candidates shared by every layer (RMSMP's layer-wise uniformity)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mixq.errors import RatioError
from mixq.schemes import Candidate

# How far from 1 the shares may sum, to admit decimal fractions such as 0.6 + 0.35 + 0.05.
SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Ratio:
    """Shares of rows per candidate, e.g. 60% SP2-4, 35% Fixed-4, 5% Fixed-8.

    >>> r = Ratio.parse("sp2-4:0.6, fixed-4:0.35, fixed-8:0.05")
    >>> r.row_counts(16)
    {Candidate(scheme=<Scheme.SP2: 'sp2'>, bits=4): 10, \
Candidate(scheme=<Scheme.FIXED: 'fixed'>, bits=4): 5, \
Candidate(scheme=<Scheme.FIXED: 'fixed'>, bits=8): 1}
    >>> str(r)
    'sp2-4:0.6,fixed-4:0.35,fixed-8:0.05'
    """

    shares: tuple[tuple[Candidate, float], ...]

    def __post_init__(self) -> None:
        if not self.shares:
            raise RatioError("a ratio needs at least one candidate")
        seen: set[Candidate] = set()
        for candidate, share in self.shares:
            if candidate in seen:
                raise RatioError(f"candidate {candidate} appears twice in the ratio")
            seen.add(candidate)
            if not math.isfinite(share) or share < 0:
                raise RatioError(f"share of {candidate} must be >= 0, got {share}")
        total = sum(share for _, share in self.shares)
        if abs(total - 1.0) > SUM_TOLERANCE:
            listed = ", ".join(f"{c}:{s}" for c, s in self.shares)
            raise RatioError(f"ratio shares must sum to 1, got {total:.6g} ({listed})")

    @classmethod
    def parse(cls, spec: Ratio | str | Candidate | Mapping[str | Candidate, float]) -> Ratio:
        """From ``"sp2-4:0.6,fixed-4:0.4"``, a single ``"fixed-4"``, or a mapping."""
        if isinstance(spec, Ratio):
            return spec
        if isinstance(spec, Candidate):
            return cls(((spec, 1.0),))
        if isinstance(spec, Mapping):
            items = [(Candidate.parse(k), _as_share(v, k)) for k, v in spec.items()]
            return cls(tuple(items))
        if isinstance(spec, str):
            return cls(tuple(_parse_share(part) for part in spec.split(",") if part.strip()))
        raise RatioError(f"cannot read a ratio from {type(spec).__name__}: {spec!r}")

    @classmethod
    def uniform(cls, candidate: Candidate | str) -> Ratio:
        """Every row with one candidate (the single-scheme baselines)."""
        return cls(((Candidate.parse(candidate), 1.0),))

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        return tuple(c for c, _ in self.shares)

    @property
    def eq_bits(self) -> float:
        """The nominal equivalent bits: the share-weighted mean of the candidates' bits."""
        return sum(c.bits * s for c, s in self.shares)

    def row_counts(self, rows: int) -> dict[Candidate, int]:
        """Rows per candidate for a layer of ``rows`` rows, summing exactly to ``rows``.

        Largest-remainder rounding: each candidate gets ``floor(share * rows)``, and the
        rows left over go one each to the largest fractional parts; ties go to the
        candidate with more bits (accuracy first), then to the one listed first.
        """
        exact = [share * rows for _, share in self.shares]
        counts = [math.floor(x + 1e-9) for x in exact]
        order = sorted(
            range(len(exact)),
            # Rounded, so remainders equal but for float noise (0.85 * 4 vs 0.1 * 4) tie.
            key=lambda i: (-round(exact[i] - counts[i], 9), -self.shares[i][0].bits, i),
        )
        for i in order[: rows - sum(counts)]:
            counts[i] += 1
        return {c: n for (c, _), n in zip(self.shares, counts, strict=True)}

    def to_dict(self) -> dict[str, float]:
        return {str(c): s for c, s in self.shares}

    def __str__(self) -> str:
        return ",".join(f"{c}:{s:g}" for c, s in self.shares)


def _as_share(value: object, key: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RatioError(f"share of {key} is not a number: {value!r}") from None


def _parse_share(part: str) -> tuple[Candidate, float]:
    name, sep, share = part.partition(":")
    if not sep:
        return Candidate.parse(name), 1.0
    return Candidate.parse(name), _as_share(share.strip(), name.strip())
