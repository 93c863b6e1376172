"""``mixq quantize``: presets, recipe files and plans, the checkpoint's record, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _tiny import TINY_MODEL

import mixq.cli.quantize as quantize_cli
from mixq.checkpoint import read_header
from mixq.cli._common import load_model
from mixq.cli.main import main
from mixq.errors import CheckpointError
from mixq.plan import LayerPlan, Plan
from mixq.recipe import Recipe
from mixq.summary import describe


def _quantize(*extra: str, tiny_data: Path, weights: Path, out: Path) -> int:
    args = ["quantize", "--model", TINY_MODEL, "--weights", str(weights)]
    args += ["--data-dir", str(tiny_data), "--calib-images", "20", "--batch-size", "20"]
    return main([*args, "-o", str(out), "-q", *extra])


def test_a_preset_checkpoint_records_model_and_recipe(quantized: Path, float_weights: Path) -> None:
    extra = read_header(quantized)["extra"]
    assert extra["model"] == TINY_MODEL and extra["method"] == "rmsmp"
    assert Recipe.from_dict(extra["recipe"]) == Recipe.preset("rmsmp", act_bits=4)
    assert extra["float_weights"] == str(float_weights.resolve())
    layers = describe(load_model(quantized, None).model).layers
    assert [layer.act_bits for layer in layers] == [8, 4, 4, 4, 8]
    assert layers[2].counts == {"sp2-4": 10, "fixed-4": 5, "fixed-8": 1}


def test_prints_the_per_layer_summary(
    tiny_data: Path, float_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        _quantize("--recipe", "msp", tiny_data=tiny_data, weights=float_weights, out=tmp_path) == 0
    )
    printed = capsys.readouterr().out
    assert "conv3" in printed and "sp2-4:8 fixed-4:8" in printed
    assert "float layers: none" in printed


def test_a_recipe_file_and_a_plan(tiny_data: Path, float_weights: Path, tmp_path: Path) -> None:
    recipe = {
        "version": 1,
        "default": {"ratio": {"sp2-4": 0.5, "fixed-4": 0.5}, "act_bits": 6},
        "rules": [{"match": "linear", "skip": True}],
    }
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(recipe))
    Plan({"conv3": LayerPlan("fixed-8", act_bits=8)}, method="manual").save(tmp_path / "p.json")
    code = _quantize(
        "--recipe",
        str(tmp_path / "mine.yaml"),
        "--plan",
        str(tmp_path / "p.json"),
        tiny_data=tiny_data,
        weights=float_weights,
        out=tmp_path / "out",
    )
    assert code == 0
    path = tmp_path / "out" / "quantized.safetensors"
    assert read_header(path)["extra"]["method"] == "mine+manual"
    summary = describe(load_model(path, None).model)
    counts = {layer.name: layer.counts for layer in summary.layers}
    assert counts["conv3"] == {"fixed-8": 16} and counts["conv2"] == {"sp2-4": 4, "fixed-4": 4}
    assert summary.float_layers == ["linear"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--recipe", "rmsmp9"], "unknown recipe 'rmsmp9'"),
        (["--recipe", "missing.yaml"], "recipe file not found: missing.yaml"),
        (["--plan", "missing.json"], "plan file not found"),
        (["--act-bits", "99"], "act_bits must be 0 (float) or an integer"),
        (["--recipe", "r.yaml", "--first-last", "none"], "shape presets only"),
        (["--first-last", "fixed-9"], "fixed supports 2..8 bits, got 9"),
    ],
)
def test_bad_input_exits_1_with_the_problem_named(
    extra: list[str],
    message: str,
    tiny_data: Path,
    float_weights: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    assert _quantize(*extra, tiny_data=tiny_data, weights=float_weights, out=tmp_path) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "quantized.safetensors").exists()


def test_missing_or_quantised_weights_are_refused(
    tiny_data: Path, quantized: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "nope.pt"
    assert _quantize(tiny_data=tiny_data, weights=missing, out=tmp_path) == 1
    assert f"checkpoint not found: {missing}" in capsys.readouterr().err
    assert _quantize(tiny_data=tiny_data, weights=quantized, out=tmp_path) == 1
    assert "is a quantised model" in capsys.readouterr().err


def test_a_failed_write_still_releases_the_other_ranks_at_the_barrier(
    tiny_data: Path, float_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under torchrun the other ranks wait at the barrier for rank 0's write: rank 0 must
    # reach it even when the write fails, or they wait until the process group times out.
    reached: list[str] = []

    def failing_save(*args: object, **kwargs: object) -> None:
        raise CheckpointError("disk full")

    monkeypatch.setattr(quantize_cli, "save_quantized", failing_save)
    monkeypatch.setattr(quantize_cli, "barrier", lambda: reached.append("barrier"))
    assert _quantize(tiny_data=tiny_data, weights=float_weights, out=tmp_path) == 1
    assert reached == ["barrier"]
