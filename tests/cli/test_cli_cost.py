"""``mixq cost`` through ``mixq.cli.main.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixq.cli.main import main
from mixq.hw import CostReport
from mixq.plan import LayerPlan, Plan
from mixq.ratio import Ratio


def test_costs_a_preset_on_a_builtin_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        [
            "cost",
            "--device",
            "xc7z020",
            "--ratio",
            "rmsmp",
            "--model",
            "resnet20",
            "--act-bits",
            "4",
            "-o",
            str(tmp_path),
            "-q",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "layer1.0.conv1" in printed and "design on xc7z020" in printed
    report = CostReport.load(tmp_path / "cost.json")
    assert (tmp_path / "cost.png").stat().st_size > 1000
    assert len(report.layers) == 20 and report.model == "resnet20"
    assert report.layers[0].rows == {"fixed-8": 16}  # first and last stay at fixed-8
    assert report.layer("layer2.0.conv1").rows == {"sp2-4": 19, "fixed-4": 11, "fixed-8": 2}
    assert report.totals.cycles == sum(layer.cycles for layer in report.layers)
    assert f"{report.totals.cycles:,} cycles" in printed


def test_costs_a_plan_file_on_a_shapes_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shapes = {
        "conv": {
            "kind": "conv2d",
            "rows": 32,
            "macs_per_row": 288,
            "positions": 64,
            "input_elements": 2048,
            "output_elements": 2048,
        },
        "fc": {
            "kind": "linear",
            "rows": 10,
            "macs_per_row": 32,
            "positions": 1,
            "input_elements": 32,
            "output_elements": 10,
        },
    }
    (tmp_path / "shapes.json").write_text(json.dumps(shapes))
    plan = Plan({"conv": LayerPlan(Ratio.parse("sp2-4:0.75,fixed-8:0.25"), act_bits=4)})
    plan.save(tmp_path / "plan.json")
    code = main(
        [
            "cost",
            "--device",
            "xczu3eg",
            "--plan",
            str(tmp_path / "plan.json"),
            "--shapes",
            str(tmp_path / "shapes.json"),
            "-q",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "sp2-4:24 fixed-8:8" in printed
    assert "not in the plan (left in float, not costed): fc" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "xc7z999", "--ratio", "msp", "--model", "resnet20"], "unknown device"),
        (
            ["--device", "xc7z020", "--plan", "missing.json", "--model", "resnet20"],
            "plan file not found",
        ),
        (["--device", "xc7z020", "--ratio", "sp2-4:0.7", "--model", "resnet20"], "must sum to 1"),
        (
            ["--device", "xc7z020", "--ratio", "msp", "--shapes", "none.json"],
            "shapes file not found",
        ),
        (
            ["--device", "xc7z020", "--ratio", "msp", "--model", "resnet20", "--lut-share", "2"],
            "lut_share must lie in",
        ),
    ],
)
def test_bad_input_is_a_named_error(
    args: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["cost", *args]) == 1
    assert message in capsys.readouterr().err


def test_a_plan_for_another_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Plan({"encoder.0": LayerPlan(Ratio.parse("fixed-4"))}).save(tmp_path / "plan.json")
    args = ["cost", "--device", "xc7z045", "--plan", str(tmp_path / "plan.json")]
    assert main([*args, "--model", "resnet20"]) == 1
    assert "the shapes lack: encoder.0" in capsys.readouterr().err
    assert main(["cost", "--device", "xc7z045"]) == 2  # argparse: --plan/--ratio required


def test_act_bits_set_every_layer_of_a_plan(tmp_path: Path) -> None:
    plan = Plan({"conv1": LayerPlan(Ratio.parse("fixed-8"), act_bits=8)}, method="manual")
    plan.save(tmp_path / "plan.json")
    base = ["cost", "--device", "xc7z020", "--plan", str(tmp_path / "plan.json")]
    base += ["--model", "resnet20", "-q", "-o"]
    assert main([*base, str(tmp_path / "own")]) == 0
    assert main([*base, str(tmp_path / "a4"), "--act-bits", "4"]) == 0
    own = CostReport.load(tmp_path / "own" / "cost.json").layer("conv1")
    four = CostReport.load(tmp_path / "a4" / "cost.json").layer("conv1")
    assert own.act_bits == 8 and four.act_bits == 4
    assert four.bops * 2 == own.bops


def test_dsp_packing_per_layer_packs_the_4_bit_layer_beside_an_8_bit_one(tmp_path: Path) -> None:
    plan = Plan(
        {
            "conv1": LayerPlan(Ratio.parse("fixed-8"), act_bits=8),
            "layer1.0.conv1": LayerPlan(Ratio.parse("fixed-4"), act_bits=4),
        },
        method="manual",
    )
    plan.save(tmp_path / "plan.json")
    base = ["cost", "--device", "xc7z045", "--plan", str(tmp_path / "plan.json")]
    base += ["--model", "resnet20", "-q", "-o"]
    assert main([*base, str(tmp_path / "per-layer")]) == 0
    assert main([*base, str(tmp_path / "widest"), "--dsp-packing", "widest"]) == 0
    per_layer = CostReport.load(tmp_path / "per-layer" / "cost.json")
    widest = CostReport.load(tmp_path / "widest" / "cost.json")
    four = "layer1.0.conv1"
    # two 4-bit MACs per slice against one: half the cycles on the A4 layer, same on A8
    assert per_layer.layer(four).cycles * 2 == pytest.approx(widest.layer(four).cycles, rel=0.01)
    assert per_layer.layer("conv1").cycles == widest.layer("conv1").cycles
    assert main([*base, str(tmp_path / "bad"), "--dsp-packing", "none"]) == 2


def test_costs_a_quantised_checkpoint_as_it_is(
    quantized: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from mixq.cli._common import load_model
    from mixq.summary import describe

    args = ["cost", "--device", "xc7z020", "--checkpoint", str(quantized), "-q"]
    assert main([*args, "-o", str(tmp_path)]) == 0
    report = CostReport.load(tmp_path / "cost.json")
    summary = describe(load_model(quantized, None).model)
    # The weights alone, labelled so, not the model size (scales, codes, biases) of report.
    printed = capsys.readouterr().out
    assert f"weights alone {summary.weights_only_kib:.1f} KiB" in printed
    assert summary.weight_kib > summary.weights_only_kib
    assert report.totals.weight_kib == pytest.approx(summary.weights_only_kib)
    assert len(report.layers) == len(summary.layers)
    for layer in summary.layers:
        costed = report.layer(layer.name)
        assert costed.rows == {c: n for c, n in layer.counts.items() if n}
        assert costed.act_bits == layer.act_bits


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x80\x81 not text", "shapes file {path} is not UTF-8 text"),
        (b"{broken", "shapes file {path} is not valid JSON"),
        (b"[1, 2]", "shapes file {path} is malformed"),
    ],
)
def test_a_bad_shapes_file_is_named(
    content: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "shapes.json"
    path.write_bytes(content)
    assert main(["cost", "--device", "xc7z020", "--ratio", "msp", "--shapes", str(path)]) == 1
    assert message.format(path=path) in capsys.readouterr().err
