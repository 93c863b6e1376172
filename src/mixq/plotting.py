"""matplotlib for the figures mixq draws: imported only when a figure is drawn (it is an
optional dependency), on the Agg backend (no display needed), figures written atomically.
Needs no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixq.errors import MixqError
from mixq.io import atomic_write


def pyplot(error: type[MixqError]) -> Any:
    """``matplotlib.pyplot``, or ``error`` saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise error("plots need matplotlib: pip install matplotlib") from None
    return plt


def save_figure(fig: Any, path: str | Path) -> None:
    """Write ``fig`` to ``path`` as a PNG (never half-written), then close it."""
    import matplotlib.pyplot as plt  # the figure exists, so matplotlib does

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=120)

    try:
        atomic_write(path, write)
    finally:
        plt.close(fig)
