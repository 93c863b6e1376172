"""``mixq demo`` end to end on a tiny data set (the real code path, fewer images)."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest

import mixq.data.fashion_mnist as fashion_mnist
from mixq.cli._common import load_model
from mixq.cli._results import ResultFile
from mixq.cli.main import main
from mixq.summary import describe

TINY = ["--train-images", "40", "--qat-images", "40", "--calib-images", "20", "--batch-size", "20"]


def test_the_demo_trains_quantises_fine_tunes_and_reports(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["demo", "--data-dir", str(tiny_data), *TINY, "--epochs", "2"]
    assert main([*args, "--methods", "fixed4,rmsmp", "-o", str(tmp_path), "-q"]) == 0
    printed = capsys.readouterr().out
    result = ResultFile.load(tmp_path / "demo.json")
    assert [row["method"] for row in result.rows] == ["fp32", "fixed4-a4", "rmsmp-a4"]
    assert result.settings["act_bits"] == 4 and result.settings["test_images"] == 60
    assert result.settings["fine_tuning"]["distill"] == "logits"
    assert result.command.startswith("mixq demo --epochs 2 --train-images 40")
    for row in result.rows[1:]:
        method = row["method"].removesuffix("-a4")
        summary = describe(load_model(tmp_path / method / "quantized.safetensors", None).model)
        assert row["eq_bits"] == pytest.approx(summary.eq_bits, abs=1e-4)
        assert row["weight_kib"] == pytest.approx(summary.weight_kib, abs=0.01)
        assert 0.0 <= row["top1_ptq"] <= 1.0 and 0.0 <= row["top1"] <= 1.0
        assert f"{100 * row['top1']:.2f}" in printed
    assert result.rows[1]["eq_bits"] < result.rows[2]["eq_bits"] < 5  # rmsmp: 5% at 8 bits
    assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "float.pt").is_file()
    assert "wall time" in printed and "mixq report" in printed


def test_no_data_and_no_network_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def offline(url: str, timeout: float) -> None:
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(fashion_mnist.urllib.request, "urlopen", offline)
    assert main(["demo", "--data-dir", str(tmp_path), "-o", str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "cannot download" in err and "dataset-fashion-mnist" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unknown_method_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--methods", "fixed4,hawq"]) == 2
    assert "unknown method(s) ['hawq']" in capsys.readouterr().err
