"""Accuracy (mean with standard-error bars over seeds) against modelled FPGA images/s and
against weight KiB, one colour and marker per method, the Pareto front of each panel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _seeds import pareto_front

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
# panel name -> (axis label, how to read x from a row, maximise x?)
PANELS: dict[str, tuple[str, Any, bool]] = {
    "images_per_s_xc7z020": (
        "modelled images/s, XC7Z020",
        lambda r: r["fpga_images_per_s"]["xc7z020"],
        True,
    ),
    "images_per_s_xc7z045": (
        "modelled images/s, XC7Z045",
        lambda r: r["fpga_images_per_s"]["xc7z045"],
        True,
    ),
    "weight_kib": ("weight KiB (weights at their bits)", lambda r: r["weight_kib"], False),
}


def front_members(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, list[str]]:
    """For each panel, the ``method@eq_bits`` labels on its Pareto front."""
    fronts = {}
    for panel, (_, read_x, maximise) in PANELS.items():
        points = [(float(read_x(r)), float(r[f"{metric}_mean"])) for r in rows]
        fronts[panel] = [_label(rows[i]) for i in pareto_front(points, maximise_x=maximise)]
    return fronts


def _label(row: Mapping[str, Any]) -> str:
    return f"{row['method']}@w{row['eq_bits_target']}"


def pareto_figure(rows: Sequence[Mapping[str, Any]], metric: str, path: Path, title: str) -> Path:
    """Write the three-panel figure to ``path`` (PNG); filled markers are 4-bit
    equivalent, hollow ones 3-bit; the dashed line joins each panel's front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.2 * len(PANELS), 4.4))
    for ax, (xlabel, read_x, maximise) in zip(axes, PANELS.values(), strict=True):
        for row in rows:
            index = methods.index(row["method"])
            colour = colours(index % 10)
            filled = row["eq_bits_target"] == max(r["eq_bits_target"] for r in rows)
            ax.errorbar(
                read_x(row),
                100 * row[f"{metric}_mean"],
                yerr=100 * (row[f"{metric}_se"] or 0.0),
                marker=MARKERS[index % len(MARKERS)],
                color=colour,
                markerfacecolor=colour if filled else "white",
                linestyle="none",
                capsize=3,
                label=f"{row['method']} (W{row['eq_bits_target']})",
            )
        points = [(float(read_x(r)), 100 * float(r[f"{metric}_mean"])) for r in rows]
        front = sorted(points[i] for i in pareto_front(points, maximise_x=maximise))
        ax.plot(*zip(*front, strict=True), "k--", linewidth=0.8, label="Pareto front")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(title + " (bars: standard error over seeds; FPGA figures modelled)")
    fig.tight_layout(rect=(0, 0, 0.84, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
