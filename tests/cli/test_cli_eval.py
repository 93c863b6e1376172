"""``mixq eval``: top-1 of quantised and float checkpoints, quantisation switched off."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _tiny import TINY_MODEL

from mixq.cli._common import load_model
from mixq.cli._results import ResultFile
from mixq.cli._zoo import get_model, top1
from mixq.cli.main import main
from mixq.integer import evaluate_exact
from mixq.recipe import Recipe
from mixq.summary import describe


def _eval(*args: str, tiny_data: Path) -> int:
    return main(["eval", *args, "--data-dir", str(tiny_data), "--batch-size", "16", "-q"])


def _printed_top1(text: str) -> float:
    return float(re.search(r"top-1 ([0-9.]+)", text).group(1))  # type: ignore[union-attr]


def test_quantised_top1_is_the_deployed_integer_models_and_is_written(
    quantized: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _eval(str(quantized), "-o", str(tmp_path), tiny_data=tiny_data) == 0
    printed = capsys.readouterr().out
    model = load_model(quantized, None).model
    loader = get_model(TINY_MODEL).loader("test", 7, root=tiny_data)
    expected = evaluate_exact(model, loader, engine="reference")  # another engine, same integers
    assert _printed_top1(printed) == pytest.approx(expected.top1, abs=5e-5)
    assert "on 60 test images" in printed and "(integer-int8)" in printed
    assert f"{expected.fake_quant_disagreements} of 60 predictions differ" in printed
    (row,) = ResultFile.load(tmp_path / "eval.json").rows
    assert row["method"] == "rmsmp" and row["evaluated"] == "integer-int8"
    assert row["top1"] == expected.top1
    assert row["fake_quant_disagreements"] == expected.fake_quant_disagreements
    assert row["eq_bits"] == pytest.approx(describe(model).eq_bits, abs=1e-4)


@pytest.fixture(scope="module")
def quantized_nearest(
    tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, float_weights: Path
) -> Path:
    """RMSMP with round-to-nearest weights: GPTQ would replace the float weights, so only
    with nearest rounding does switching quantisation off give the float model back."""
    out = tmp_path_factory.mktemp("nearest")
    recipe = Recipe.preset("rmsmp", act_bits=4).to_dict()
    recipe["weight_rounding"] = "nearest"
    (out / "recipe.json").write_text(json.dumps(recipe))
    args = ["quantize", "--model", TINY_MODEL, "--weights", str(float_weights)]
    args += ["--recipe", str(out / "recipe.json"), "--data-dir", str(tiny_data)]
    assert main([*args, "--calib-images", "40", "--batch-size", "20", "-o", str(out), "-q"]) == 0
    return out / "quantized.safetensors"


def test_switching_all_quantisation_off_gives_the_float_accuracy(
    quantized_nearest: Path, float_weights: Path, tiny_data: Path, capsys: pytest.CaptureFixture
) -> None:
    # Folded BN with quantisation off computes what the float model computes.
    assert _eval(str(float_weights), "--model", TINY_MODEL, tiny_data=tiny_data) == 0
    float_top1 = _printed_top1(capsys.readouterr().out)
    quantized = str(quantized_nearest)
    assert _eval(quantized, "--float", tiny_data=tiny_data) == 0
    printed = capsys.readouterr().out
    assert _printed_top1(printed) == float_top1
    assert "-float-all" in printed and "32.000 equivalent bits" in printed
    assert _eval(quantized, "--float", "activations", "--images", "30", tiny_data=tiny_data) == 0
    assert "on 30 test images" in capsys.readouterr().out


def test_every_engine_gives_the_same_figure_and_fake_quant_its_own(
    quantized: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rows = {}
    for flag in (["--integer", "reference"], ["--integer", "int8"], ["--fake-quant"]):
        assert _eval(str(quantized), *flag, "-o", str(tmp_path), tiny_data=tiny_data) == 0
        printed = capsys.readouterr().out
        (row,) = ResultFile.load(tmp_path / "eval.json").rows
        assert row["top1"] == pytest.approx(_printed_top1(printed), abs=5e-5)
        rows[flag[-1]] = row
    assert rows["reference"]["top1"] == rows["int8"]["top1"]
    assert rows["reference"]["fake_quant_disagreements"] == rows["int8"]["fake_quant_disagreements"]
    fake = rows["--fake-quant"]
    assert fake["evaluated"] == "fake-quant" and "fake_quant_disagreements" not in fake
    model = load_model(quantized, None).model
    assert fake["top1"] == top1(model, get_model(TINY_MODEL).loader("test", 16, root=tiny_data))
    # Every disagreement moves top-1 by at most one image of 60.
    gap = abs(rows["int8"]["top1"] - fake["top1"])
    assert gap <= rows["int8"]["fake_quant_disagreements"] / 60 + 1e-9


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.safetensors"], 1, "checkpoint not found: missing.safetensors"),
        (["FLOAT"], 1, "holds float weights: pass --model"),
        (["FLOAT", "--model", TINY_MODEL, "--float"], 1, "--float needs a quantised checkpoint"),
        (["QUANT", "--float", "bias"], 2, "invalid choice: 'bias'"),
        (["QUANT", "--images", "0"], 2, "must be >= 1"),
        (["QUANT", "--model", "vgg"], 1, "unknown model 'vgg'"),
        (["QUANT", "--integer", "gpu"], 2, "invalid choice: 'gpu'"),
        (["FLOAT", "--model", TINY_MODEL, "--integer"], 1, "--integer and --fake-quant need"),
        (["QUANT", "--integer", "--fake-quant"], 2, "not allowed with argument"),
    ],
)
def test_bad_input_exit_codes(
    args: list[str],
    code: int,
    message: str,
    quantized: Path,
    float_weights: Path,
    tiny_data: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    paths = {"FLOAT": str(float_weights), "QUANT": str(quantized)}
    assert _eval(*[paths.get(a, a) for a in args], tiny_data=tiny_data) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
