"""A layer's row assignment: which (scheme, bits) candidate each row uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixq.errors import SchemeError
from mixq.schemes import Candidate


@dataclass(frozen=True, eq=False)
class RowAssignment:
    """One code per row; ``candidates[code]`` is that row's (scheme, bits).

    >>> a = RowAssignment.from_rows(["sp2-4", "fixed-8", "sp2-4"])
    >>> a.codes.tolist(), [str(c) for c in a.candidates]
    ([0, 1, 0], ['sp2-4', 'fixed-8'])
    >>> a.eq_bits
    5.333333333333333
    """

    candidates: tuple[Candidate, ...]
    codes: np.ndarray  # (rows,) int, each in range(len(candidates))

    def __post_init__(self) -> None:
        codes = np.asarray(self.codes, dtype=np.int64).reshape(-1)
        codes.setflags(write=False)
        object.__setattr__(self, "codes", codes)
        object.__setattr__(self, "candidates", tuple(Candidate.parse(c) for c in self.candidates))
        if len(set(self.candidates)) != len(self.candidates):
            raise SchemeError(f"duplicate candidates in assignment: {self.candidates}")
        if codes.size and (codes.min() < 0 or codes.max() >= len(self.candidates)):
            raise SchemeError(
                f"row codes must lie in 0..{len(self.candidates) - 1}, "
                f"got {int(codes.min())}..{int(codes.max())}"
            )

    @classmethod
    def uniform(cls, candidate: Candidate | str, rows: int) -> RowAssignment:
        return cls((Candidate.parse(candidate),), np.zeros(rows, dtype=np.int64))

    @classmethod
    def from_rows(cls, per_row: Sequence[Candidate | str]) -> RowAssignment:
        parsed = [Candidate.parse(c) for c in per_row]
        candidates = tuple(dict.fromkeys(parsed))
        index = {c: i for i, c in enumerate(candidates)}
        return cls(candidates, np.array([index[c] for c in parsed], dtype=np.int64))

    @property
    def rows(self) -> int:
        return int(self.codes.size)

    def row_candidates(self) -> list[Candidate]:
        return [self.candidates[i] for i in self.codes]

    def bits_per_row(self) -> np.ndarray:
        bits = np.array([c.bits for c in self.candidates], dtype=np.int64)
        return bits[self.codes]

    def counts(self) -> dict[Candidate, int]:
        tally = np.bincount(self.codes, minlength=len(self.candidates))
        return {c: int(n) for c, n in zip(self.candidates, tally, strict=True)}

    @property
    def eq_bits(self) -> float:
        """Mean bits over rows (every row of a layer holds the same number of weights)."""
        return float(self.bits_per_row().mean()) if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"candidates": [str(c) for c in self.candidates], "codes": self.codes.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RowAssignment:
        return cls(tuple(data["candidates"]), np.asarray(data["codes"], dtype=np.int64))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RowAssignment):
            return NotImplemented
        return self.candidates == other.candidates and np.array_equal(self.codes, other.codes)

    def __hash__(self) -> int:
        return hash((self.candidates, self.codes.tobytes()))
