"""The report's pictures: each layer's row assignment as a heat strip, and accuracy against
equivalent bits (matplotlib, imported only when drawing)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixq.assignment import RowAssignment
from mixq.errors import MixqError
from mixq.plotting import pyplot, save_figure
from mixq.schemes import Candidate

FLOAT_BITS = 32.0

log = logging.getLogger("mixq")


class PlotError(MixqError, ValueError):
    """A plot with nothing to draw."""


class NoMatplotlibError(PlotError):
    """matplotlib is not installed (it is an optional dependency)."""


def _pyplot() -> Any:
    return pyplot(NoMatplotlibError)


def draw_or_warn(draw: Callable[[], None]) -> None:
    """Draw, or only warn when matplotlib is missing: the text and JSON are what matter."""
    try:
        draw()
    except NoMatplotlibError as exc:
        log.warning("no plot: %s", exc)


def candidate_order(assignments: Mapping[str, RowAssignment]) -> list[Candidate]:
    """Every candidate used anywhere, by bits then scheme (a stable colour for each)."""
    found = {c for a in assignments.values() for c in a.candidates}
    return sorted(found, key=lambda c: (c.bits, str(c.scheme)))


def assignment_grid(
    assignments: Mapping[str, RowAssignment], order: Sequence[Candidate]
) -> np.ndarray:
    """``(layers, max rows)`` of candidate indices into ``order``; NaN past a layer's rows.

    >>> a = {"l1": RowAssignment.from_rows(["sp2-4", "fixed-8"]),
    ...      "l2": RowAssignment.from_rows(["fixed-8"])}
    >>> assignment_grid(a, candidate_order(a)).tolist()
    [[0.0, 1.0], [1.0, nan]]
    """
    index = {c: i for i, c in enumerate(order)}
    width = max((a.rows for a in assignments.values()), default=0)
    grid = np.full((len(assignments), width), np.nan)
    for row, assignment in enumerate(assignments.values()):
        lookup = np.array([index[c] for c in assignment.candidates], dtype=np.float64)
        grid[row, : assignment.rows] = lookup[assignment.codes]
    return grid


def plot_assignment(assignments: Mapping[str, RowAssignment], path: Path, *, title: str) -> None:
    """One strip of coloured cells per layer, one cell per row, a colour per candidate."""
    if not assignments:
        raise PlotError("the model has no quantised layer to draw")
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    order = candidate_order(assignments)
    colours = [plt.get_cmap("tab10")(i % 10) for i in range(len(order))]
    cmap = ListedColormap(colours)
    cmap.set_bad("white")
    grid = np.ma.masked_invalid(assignment_grid(assignments, order))
    names = list(assignments)
    fig, ax = plt.subplots(figsize=(9.0, 1.2 + 0.28 * len(names)))
    ax.imshow(
        grid,
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=-0.5,
        vmax=len(order) - 0.5,
    )
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("row (output channel / feature)")
    ax.set_title(title, fontsize=9)
    handles = [Patch(color=colour, label=str(c)) for c, colour in zip(order, colours, strict=True)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


MARKERS = "osD^vP*X<>hp"


def method_styles(methods: Sequence[str]) -> dict[str, tuple[int, str]]:
    """One colour index and marker per method, in order of first appearance.

    >>> method_styles(["fixed4-a4", "rmsmp-a4", "fixed4-a4"])
    {'fixed4-a4': (0, 'o'), 'rmsmp-a4': (1, 's')}
    """
    unique = list(dict.fromkeys(methods))
    return {m: (i % 10, MARKERS[i % len(MARKERS)]) for i, m in enumerate(unique)}


def plot_accuracy_bits(
    series: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
    path: Path,
    *,
    metric: str = "top1",
    title: str = "accuracy against equivalent weight bits",
) -> None:
    """Points ``(eq_bits, metric)`` of the rows of one data set, one colour and marker per
    method, named in the legend (no text on the axes to overlap). A row with
    ``<metric>_ptq`` gets a hollow marker there, joined to its filled fine-tuned value. Only
    a row whose method is ``fp32`` (the float model) is drawn as a dashed line; other rows
    at 32 bits (quantisation switched off in a quantised model) are left out."""
    rows = [
        row
        for _, result_rows in series
        for row in result_rows
        if metric in row and "eq_bits" in row
    ]
    quantised = [r for r in rows if float(r["eq_bits"]) < FLOAT_BITS]
    floats = [r for r in rows if r.get("method") == "fp32"]
    if not quantised and not floats:
        raise PlotError(f"no result row has both 'eq_bits' and {metric!r}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    styles = method_styles([str(r.get("method", "")) for r in quantised])
    colours = plt.get_cmap("tab10")
    for row in floats:
        value = 100 * float(row[metric])
        ax.axhline(value, color="grey", linestyle="--", linewidth=1, label=f"fp32 {value:.2f}%")
    labelled: set[str] = set()
    for row in quantised:
        method = str(row.get("method", ""))
        number, marker = styles[method]
        colour = colours(number)
        x, value = float(row["eq_bits"]), 100 * float(row[metric])
        if f"{metric}_ptq" in row:
            before = 100 * float(row[f"{metric}_ptq"])
            ax.plot([x, x], [before, value], color=colour, linewidth=0.8)
            ax.plot([x], [before], marker, mfc="none", color=colour)
        label = None if method in labelled else method
        labelled.add(method)
        ax.plot([x], [value], marker, color=colour, label=label)
    ax.set_xlabel("equivalent weight bits")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=8,
        title="filled: final; hollow: before fine-tuning",
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    fig.tight_layout()
    save_figure(fig, path)
