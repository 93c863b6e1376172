"""Hardware plots: a PNG written whole, and a clear error where there is nothing to draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mixq.errors import HardwareCostError
from mixq.hw.plot import plot_layer_cycles, plot_throughput_curves
from mixq.hw.report import CostReport

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_throughput_curves_are_written_as_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    shares = np.linspace(0.0, 1.0, 5)
    path = tmp_path / "curves.png"
    plot_throughput_curves(
        [("a", shares, 10 + 4 * shares), ("b", shares, 12 - 2 * shares)],
        [(1.0, 14.0), (0.0, 12.0)],
        path,
        title="test",
    )
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary left


def test_a_report_without_a_design_has_no_cycles_to_plot(tmp_path: Path) -> None:
    report = CostReport("model", "compute", ())
    with pytest.raises(HardwareCostError, match="only an FPGA cost report has cycles to plot"):
        plot_layer_cycles(report, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
