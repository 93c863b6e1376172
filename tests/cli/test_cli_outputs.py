"""Where commands write: each its own default, never over an input, checked before the work;
options validated before the work; SIGTERM like Ctrl-C."""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _tiny import TINY_MODEL

from mixq.cli._results import ResultFile
from mixq.cli.main import build_parser, main

EXPECTED_DEFAULTS = {
    "demo": "mixq-demo",
    "sensitivity": "mixq-sensitivity",
    "allocate": "mixq-plan",
    "quantize": "mixq-quantized",
    "train": "mixq-train",
    "eval": None,  # writes only with -o
    "export": None,  # beside the checkpoint
    "report": "mixq-report",
    "cost": None,  # writes only with -o
}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_command_has_its_own_output_default() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {name: sub.get_default("output") for name, sub in commands.items()} == (
        EXPECTED_DEFAULTS
    )
    for name, sub in commands.items():  # what the parsed namespace holds, too
        action = next(a for a in sub._actions if a.dest == "output")
        assert action.default == EXPECTED_DEFAULTS[name]


def _quantize(float_weights: Path, tiny_data: Path, *extra: str) -> int:
    return main([
        "quantize", "--model", TINY_MODEL, "--weights", str(float_weights), "--recipe", "fixed4",
        "--data-dir", str(tiny_data), "--calib-images", "20", "--batch-size", "20", "-q", *extra,
    ])  # fmt: skip


def _train(checkpoint: Path, tiny_data: Path, *extra: str) -> int:
    return main([
        "train", str(checkpoint), "--epochs", "1", "--lr", "0.001", "--optimizer", "adamw",
        "--batch-size", "20", "--data-dir", str(tiny_data), "--train-images", "20",
        "--eval-images", "20", "-q", *extra,
    ])  # fmt: skip


def test_quantize_then_train_without_output_keeps_the_input(
    float_weights: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _quantize(float_weights, tiny_data) == 0
    quantized = tmp_path / "mixq-quantized" / "quantized.safetensors"
    before = _digest(quantized)
    assert _train(quantized, tiny_data) == 0
    assert _digest(quantized) == before
    assert (tmp_path / "mixq-train" / "quantized.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixq-quantized", "mixq-train"]


def test_an_output_that_is_the_input_is_refused_before_any_work(
    quantized: Path, tiny_data: Path, capsys: pytest.CaptureFixture
) -> None:
    before = _digest(quantized)
    started = time.perf_counter()
    assert _train(quantized, tiny_data, "-o", str(quantized.parent)) == 1
    assert time.perf_counter() - started < 5
    err = capsys.readouterr().err
    assert "both an input and an output" in err and str(quantized.parent) in err
    assert _digest(quantized) == before
    assert not (quantized.parent / "metrics.jsonl").exists()


def test_an_output_folder_that_is_a_file_is_refused_before_quantising(
    float_weights: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file")
    assert _quantize(float_weights, tiny_data, "-o", str(blocker)) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert blocker.read_text() == "a file"


def test_eval_and_cost_write_nothing_unasked(
    quantized: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["eval", str(quantized), "--data-dir", str(tiny_data), "--batch-size", "20", "-q"])
    assert code == 0
    assert main(["cost", "--device", "xc7z020", "--ratio", "rmsmp", "--model", "resnet20"]) in (
        0,
        1,  # the FPGA model may refuse this device; what matters is that nothing is written
    )
    assert list(tmp_path.iterdir()) == []


def test_eval_json_records_a_command_that_reproduces_it(
    quantized: Path, tiny_data: Path, tmp_path: Path
) -> None:
    args = ["eval", str(quantized), "--data-dir", str(tiny_data), "--batch-size", "20"]
    args += ["--images", "30", "--float", "activations", "-o", str(tmp_path / "a"), "-q"]
    assert main(args) == 0
    first = ResultFile.load(tmp_path / "a" / "eval.json")
    for needed in ("--images 30", "--float activations", "--batch-size 20", "--output"):
        assert needed in first.command
    replay = shlex.split(first.command)
    assert replay[:2] == ["mixq", "eval"]
    replay[replay.index("--output") + 1] = str(tmp_path / "b")
    assert main([*replay[1:], "-q"]) == 0
    second = ResultFile.load(tmp_path / "b" / "eval.json")
    assert second.rows == first.rows and second.settings == first.settings


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--lr", "inf"),
        ("--lr", "nan"),
        ("--weight-decay", "-1"),
        ("--freeze-bn-epoch", "-5"),
        ("--epochs", "1.5"),
        ("--momentum", "nan"),
    ],
)
def test_training_options_that_make_no_sense_are_refused(
    quantized: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, option: str,
    value: str,
) -> None:  # fmt: skip
    args = ["train", str(quantized), "--data-dir", str(tiny_data), "-o", str(tmp_path), option]
    assert main([*args, value]) == 2
    assert f"argument {option}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_demo_with_bad_act_bits_fails_before_float_training(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    started = time.perf_counter()
    code = main(["demo", "--act-bits", "1", "--data-dir", str(tiny_data), "-o", str(tmp_path)])
    assert code == 1 and "act_bits" in capsys.readouterr().err
    assert time.perf_counter() - started < 5
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_given_as_a_plan_is_a_typed_error(
    quantized: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["cost", "--device", "xc7z020", "--plan", str(quantized), "--model", "resnet20"])
    err = capsys.readouterr().err
    assert code == 1 and f"plan file {quantized} is not UTF-8 text" in err


def test_a_binary_device_file_is_a_typed_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    device = tmp_path / "board.yaml"
    device.write_bytes(bytes(range(256)))
    code = main(["cost", "--device", str(device), "--ratio", "rmsmp", "--model", "resnet20"])
    err = capsys.readouterr().err
    assert code == 1 and f"device file {device} is not UTF-8 text" in err


def test_unknown_device_and_bad_threads_are_refused(capsys: pytest.CaptureFixture) -> None:
    assert main(["report", "x.safetensors", "--device", "tpu9"]) == 1
    assert "--device" in capsys.readouterr().err
    assert main(["report", "x.safetensors", "--threads", "0"]) == 2


def test_sigterm_exits_143_with_a_message_and_no_half_written_file(tmp_path: Path) -> None:
    # A command that writes through mixq.io while the signal arrives.
    script = f"""
import sys, time
from pathlib import Path
import mixq.cli.main as cli
from mixq.io import atomic_write

def slow(args):
    def write(tmp):
        tmp.write_bytes(b"half")
        print("writing", flush=True)
        time.sleep(60)
    atomic_write(Path({str(tmp_path)!r}) / "out.bin", write)
    return 0

parser_builder = cli.build_parser
def build():
    parser = parser_builder()
    parser._subparsers._group_actions[0].choices["report"].set_defaults(
        handler=slow, outputs=None
    )
    return parser
cli.build_parser = build
sys.exit(cli.main(["report", "-o", {str(tmp_path)!r}]))
"""
    source = Path(__file__).resolve().parents[2] / "src"
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(source)},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "writing"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
