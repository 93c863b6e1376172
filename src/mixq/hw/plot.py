"""Plots of cost reports and throughput curves (matplotlib, imported only when drawing)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mixq.errors import HardwareCostError
from mixq.hw.report import CostReport
from mixq.plotting import pyplot, save_figure


def plot_layer_cycles(report: CostReport, path: str | Path) -> None:
    """Per layer, the cycles of the DSP array and of the LUT array (the layer takes the
    larger); one bar pair per layer."""
    if report.design is None:
        raise HardwareCostError("only an FPGA cost report has cycles to plot")
    plt = pyplot(HardwareCostError)
    names = [layer.name for layer in report.layers]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(names) + 2), 4.0))
    dsp = [layer.dsp_cycles or 0 for layer in report.layers]
    lut = [layer.lut_cycles or 0 for layer in report.layers]
    ax.bar(x - 0.2, dsp, 0.4, label="DSP array")
    ax.bar(x + 0.2, lut, 0.4, label="LUT array")
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylabel("cycles per sample")
    total = report.totals
    ax.set_title(
        f"{report.model} on {report.design.device}: {total.cycles:,} cycles, "
        f"{(total.latency_s or 0) * 1e3:.2f} ms"
    )
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def plot_throughput_curves(
    curves: Sequence[tuple[str, np.ndarray, np.ndarray]],
    optima: Sequence[tuple[float, float]],
    path: str | Path,
    *,
    title: str,
) -> None:
    """Throughput against the SP2 share, one line per ``(label, shares, macs_per_cycle)``,
    each optimum ``(share, macs)`` marked."""
    plt = pyplot(HardwareCostError)
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for (label, shares, macs), (best_share, best_macs) in zip(curves, optima, strict=True):
        (line,) = ax.plot(shares, macs, label=label)
        ax.plot([best_share], [best_macs], "o", color=line.get_color())
    ax.set_xlabel("share of rows on the LUT array (SP2)")
    ax.set_ylabel("MACs per cycle")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
