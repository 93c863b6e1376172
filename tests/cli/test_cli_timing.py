"""``mixq eval --timing``: images per second of float, fake-quant and every engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixq.cli._results import ResultFile
from mixq.cli.main import main
from mixq.integer.compile import ENGINES


def test_timing_measures_every_engine_against_float(
    quantized: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["eval", str(quantized), "--data-dir", str(tiny_data), "--batch-size", "20"]
    args += ["--timing", "--timing-batches", "2", "-o", str(tmp_path), "-q"]
    assert main(args) == 0
    result = ResultFile.load(tmp_path / "timing.json")
    rows = {row["engine"]: row for row in result.rows}
    assert list(rows) == ["float", "fake-quant", *ENGINES]
    assert rows["float"]["speedup_vs_float_ratio"] == 1.0
    assert rows["float"]["images_per_s"] > 0 and rows["fake-quant"]["images_per_s"] > 0
    timed = [row for row in result.rows if row["images_per_s"] is not None]
    assert all(row["speedup_vs_float_ratio"] > 0 for row in timed)
    assert result.settings["batch"] == 20 and result.settings["batches"] == 2
    assert "--timing" in result.command
    printed = capsys.readouterr().out
    assert "images/s" in printed and all(engine in printed for engine in ENGINES)


def test_fast_engine_is_accepted(quantized: Path, tiny_data: Path) -> None:
    args = ["eval", str(quantized), "--data-dir", str(tiny_data), "--batch-size", "20"]
    assert main([*args, "--images", "20", "--integer", "fast", "-q"]) in (0, 1)
