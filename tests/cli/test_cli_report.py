"""``mixq report``: its numbers are the model's; the JSON round-trips; the plots are drawn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixq.cli._common import load_model
from mixq.cli._report_data import ModelReport
from mixq.cli._results import ResultFile
from mixq.cli.main import main
from mixq.nn.layers import QUANT_LAYERS
from mixq.summary import describe


def test_the_report_holds_the_models_counts_bits_and_rows(
    quantized: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["report", str(quantized), "-o", str(tmp_path), "-q"]) == 0
    printed = capsys.readouterr().out
    model = load_model(quantized, None).model
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)}
    data = json.loads((tmp_path / "report.json").read_text())
    assert [layer["name"] for layer in data["layers"]] == list(layers)
    for entry in data["layers"]:
        layer = layers[entry["name"]]
        codes = layer.weight_quant.assignment.codes
        names = [str(c) for c in layer.weight_quant.assignment.candidates]
        # Counts and bits straight from the layer's row codes, not from describe().
        tally = np.bincount(codes, minlength=len(names))
        assert entry["counts"] == {n: int(k) for n, k in zip(names, tally, strict=True)}
        bits = np.array([int(n.split("-")[1]) for n in names])[codes]
        assert entry["eq_bits"] == pytest.approx(bits.mean())
        assert entry["assignment"]["codes"] == codes.tolist()
        assert entry["rows"] == layer.weight.shape[0]
    weights = np.array([e["weights"] for e in data["layers"]])
    eq_bits = np.array([e["eq_bits"] for e in data["layers"]])
    assert data["eq_bits"] == pytest.approx((weights * eq_bits).sum() / weights.sum())
    assert data["eq_bits"] == pytest.approx(describe(model).eq_bits)
    assert sum(data["rows_per_candidate"].values()) == sum(e["rows"] for e in data["layers"])
    assert data["rows_per_candidate"] == {"fixed-8": 20, "sp2-4": 25, "fixed-4": 13}
    assert data["model"] == "small-cnn-w16" and data["float_layers"] == []
    assert ModelReport.from_dict(data).to_dict() == data
    assert f"{data['eq_bits']:.3f} equivalent weight bits" in printed
    assert "conv3" in printed and "sp2-4:10 fixed-4:5 fixed-8:1" in printed
    assert (tmp_path / "assignment.png").read_bytes()[:4] == b"\x89PNG"


def test_accuracy_against_bits_from_result_files(
    quantized: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rows = [
        {"method": "fp32", "eq_bits": 32.0, "top1": 0.9},
        {"method": "rmsmp-a4", "eq_bits": 4.4, "top1_ptq": 0.8, "top1": 0.88},
    ]
    ResultFile.new("mixq_demo", "mixq demo", {}, rows).save(tmp_path / "demo.json")
    code = main(["report", "--results", str(tmp_path / "demo.json"), "-o", str(tmp_path / "r")])
    assert code == 0
    assert (tmp_path / "r" / "accuracy_bits.png").stat().st_size > 1000
    assert not (tmp_path / "r" / "report.json").exists()
    capsys.readouterr()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 1, "nothing to report"),
        (["missing.safetensors"], 1, "checkpoint not found"),
        (["--results", "RESULTS_BAD"], 1, "is not a result file"),
        (["--results", "RESULTS_BINARY"], 1, "binary.json is not UTF-8 text"),
        (["--results", "RESULTS_BROKEN"], 1, "broken.json is not valid JSON"),
        (["--results", "RESULTS_OK", "--metric", "spearman"], 1, "'eq_bits' and 'spearman'"),
        (["--frobnicate"], 2, "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_input_exit_codes(
    args: list[str], code: int, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "bad.json").write_text('{"rows": []}')
    rows = [{"method": "fixed4", "eq_bits": 4.0, "top1": 0.5}]
    ResultFile.new("x", "x", {}, rows).save(tmp_path / "ok.json")
    (tmp_path / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff")
    (tmp_path / "broken.json").write_text('{"rows": [')
    names = {"BAD": "bad", "OK": "ok", "BINARY": "binary", "BROKEN": "broken"}
    paths = {f"RESULTS_{key}": str(tmp_path / f"{name}.json") for key, name in names.items()}
    argv = ["report", *[paths.get(a, a) for a in args], "-o", str(tmp_path / "out")]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
