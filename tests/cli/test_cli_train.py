"""``mixq train``: epochs, metrics, the result checkpoint, distillation, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mixq.cli.train as train_command
from mixq.checkpoint import read_header
from mixq.cli._common import load_model
from mixq.cli.main import main


def _train(quantized: Path, out: Path, tiny_data: Path, *extra: str) -> int:
    args = ["train", str(quantized), "--epochs", "2", "--lr", "0.01", "--optimizer", "adamw"]
    args += ["--batch-size", "20", "--data-dir", str(tiny_data), "--train-images", "60"]
    return main([*args, "--eval-images", "20", "-o", str(out), "-q", *extra])


def _state(path: Path) -> dict[str, torch.Tensor]:
    state = load_model(path, None).model.state_dict()
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


def test_trains_writes_metrics_and_the_result(
    quantized: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _train(quantized, tmp_path, tiny_data, "--distill", "logits") == 0
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert all(0.0 <= line["metrics"]["top1"] <= 1.0 for line in lines)
    printed = capsys.readouterr().out
    assert f"top-1 {lines[-1]['metrics']['top1']:.4f}" in printed
    extra = read_header(tmp_path / "quantized.safetensors")["extra"]
    assert extra["train"]["distill"] == "logits" and extra["train"]["epochs"] == 2
    assert extra["model"] == "small-cnn-w16" and extra["top1"] == lines[-1]["metrics"]["top1"]
    before, after = _state(quantized), _state(tmp_path / "quantized.safetensors")
    assert before.keys() == after.keys()
    assert not torch.equal(before["conv3.weight"], after["conv3.weight"])


def test_resume_after_an_interrupt_equals_an_uninterrupted_run(
    quantized: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _train(quantized, tmp_path / "straight", tiny_data) == 0
    real_top1 = train_command.top1
    calls = {"n": 0}

    def killed_in_epoch_two(*args: object, **kwargs: object) -> float:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_top1(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train_command, "top1", killed_in_epoch_two)
    assert _train(quantized, tmp_path / "resumed", tiny_data) == 130
    assert not (tmp_path / "resumed" / "quantized.safetensors").exists()
    monkeypatch.setattr(train_command, "top1", real_top1)
    assert _train(quantized, tmp_path / "resumed", tiny_data) == 1  # no --resume: refused
    assert _train(quantized, tmp_path / "resumed", tiny_data, "--resume") == 0
    straight = _state(tmp_path / "straight" / "quantized.safetensors")
    resumed = _state(tmp_path / "resumed" / "quantized.safetensors")
    assert straight.keys() == resumed.keys()
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name
    metrics = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [1, 2]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--resume", "--lr", "0.02"], 1, "different configuration (differs in ['lr'])"),
        (["--optimizer", "lion"], 2, "invalid choice: 'lion'"),
        (["--epochs", "-1"], 2, "must be >= 1"),
        (["--distill", "logits", "--weights", "gone.pt"], 1, "checkpoint not found: gone.pt"),
    ],
)
def test_bad_input_exit_codes(
    extra: list[str],
    code: int,
    message: str,
    quantized: Path,
    tiny_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    if "--resume" in extra:
        assert _train(quantized, tmp_path, tiny_data) == 0
    assert _train(quantized, tmp_path, tiny_data, *extra) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_float_checkpoint_is_refused(
    float_weights: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _train(float_weights, tmp_path, tiny_data, "--model", "small-cnn-w16") == 1
    assert "is not quantised; run `mixq quantize` first" in capsys.readouterr().err
