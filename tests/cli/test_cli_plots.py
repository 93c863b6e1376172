"""The accuracy-against-bits figure: a style per method, a legend, one data set a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mixq.cli._plots as plots
from mixq.cli._results import ResultFile
from mixq.cli.main import main

pytest.importorskip("matplotlib")


def _rows() -> list[dict[str, Any]]:
    return [
        {"method": "fp32", "eq_bits": 32.0, "top1": 0.9},
        {"method": "fixed4-a4", "eq_bits": 4.25, "top1": 0.85, "top1_ptq": 0.80},
        {"method": "sp2-4-a4", "eq_bits": 4.25, "top1": 0.86, "top1_ptq": 0.81},
        {"method": "rmsmp-a4-float-all", "eq_bits": 32.0, "top1": 0.9},  # not a float model
    ]


def test_one_style_per_method_a_legend_and_no_text_on_the_axes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    real_save = plots.save_figure

    def capture(fig: Any, path: str | Path) -> None:
        ax = fig.axes[0]
        seen["texts"] = [t.get_text() for t in ax.texts]
        seen["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        seen["hlines"] = [line for line in ax.lines if line.get_linestyle() == "--"]
        seen["colours"] = {
            line.get_label(): line.get_color() for line in ax.lines if line.get_label()[0] != "_"
        }
        real_save(fig, path)

    monkeypatch.setattr(plots, "save_figure", capture)
    plots.plot_accuracy_bits([("demo", _rows())], tmp_path / "a.png")
    assert seen["texts"] == []  # labels live in the legend: nothing to overlap
    assert seen["legend"] == ["fp32 90.00%", "fixed4-a4", "sp2-4-a4"]
    assert len(seen["hlines"]) == 1  # the float model only, not the switched-off row
    assert seen["colours"]["fixed4-a4"] != seen["colours"]["sp2-4-a4"]
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_two_data_sets_give_two_figures(tmp_path: Path) -> None:
    for name, data in (("a", "CIFAR-10 JPEG"), ("b", "Fashion-MNIST")):
        ResultFile.new("demo", "x", {"data": data}, _rows()).save(tmp_path / name / "r.json")
    code = main(["report", "--results", str(tmp_path / "a/r.json"), str(tmp_path / "b/r.json"),
                 "-o", str(tmp_path / "out"), "-q"])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "accuracy_bits_CIFAR-10-JPEG.png",
        "accuracy_bits_Fashion-MNIST.png",
    ]
