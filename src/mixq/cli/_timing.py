"""Images per second of a quantised model on each integer engine, against float.

Every model is timed on the same batches (the first ``batches`` of the loader, after one
warm-up batch), on the threads torch has; ``float`` is the same network with quantisation
switched off, ``fake-quant`` the model as trained. An engine that cannot run here (no
compiler for the fast one, a layer it does not take) is reported with its reason, not timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mixq.errors import MixqError
from mixq.integer.compile import ENGINES
from mixq.toggle import quantization_disabled


@dataclass(frozen=True)
class Timing:
    engine: str
    images_per_s: float | None  # None: the engine could not run here
    speedup_vs_float: float | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "images_per_s": None if self.images_per_s is None else round(self.images_per_s, 1),
            "speedup_vs_float_ratio": (
                None if self.speedup_vs_float is None else round(self.speedup_vs_float, 3)
            ),
            "note": self.note,
        }


@torch.no_grad()
def images_per_second(run: Callable[[torch.Tensor], Any], batches: Sequence[torch.Tensor]) -> float:
    """Images per second of ``run`` over ``batches`` after one warm-up call."""
    run(batches[0])
    start = time.perf_counter()
    for images in batches:
        run(images)
    seconds = time.perf_counter() - start
    return sum(int(b.shape[0]) for b in batches) / max(seconds, 1e-9)


def time_engines(
    model: nn.Module, example: torch.Tensor, batches: Sequence[torch.Tensor]
) -> list[Timing]:
    """Float, fake-quant and every engine of ``mixq.integer.compile.ENGINES``."""
    from mixq.integer import to_integer

    model.eval()
    with quantization_disabled(model, weights=True, activations=True):
        float_rate = images_per_second(model, batches)
    rows = [Timing("float", float_rate, 1.0), _timed("fake-quant", model, batches, float_rate)]
    for engine in ENGINES:
        try:
            integer = to_integer(model, example, engine=engine)
        except (MixqError, RuntimeError, OSError) as exc:
            rows.append(Timing(engine, None, None, f"unavailable: {_first_line(exc)}"))
            continue
        try:
            rows.append(_timed(engine, integer, batches, float_rate))
        except Exception as exc:  # shown in the table: one broken engine spoils no other row
            rows.append(Timing(engine, None, None, f"failed: {type(exc).__name__}: "
                               f"{_first_line(exc)}"))  # fmt: skip
    return rows


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:160]


def _timed(
    name: str, run: Callable[[torch.Tensor], Any], batches: Sequence[torch.Tensor], base: float
) -> Timing:
    rate = images_per_second(run, batches)
    return Timing(name, rate, rate / base)


def format_timings(rows: Sequence[Timing], *, batch: int, threads: int) -> str:
    head = f"{'engine':<12s} {'images/s':>10s} {'vs float':>9s}"
    lines = [f"timing: batches of {batch}, {threads} threads", head, "-" * len(head)]
    for row in rows:
        if row.images_per_s is None:
            lines.append(f"{row.engine:<12s} {'-':>10s} {'-':>9s}  {row.note}")
        else:
            lines.append(
                f"{row.engine:<12s} {row.images_per_s:>10.1f} {row.speedup_vs_float or 0:>8.2f}x"
            )
    return "\n".join(lines)
