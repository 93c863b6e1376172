"""``mixq sensitivity``, ``mixq train`` and ``mixq quantize`` under a torchrun-like
environment (2 gloo processes spawned once here, with torchrun's variables): the CLI starts
the process group itself, the table, the trained model and the quantised model equal one
process's, and rank 0 alone prints and writes."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from _spawn import WORLD, free_port, torchrun_env, written
from safetensors.torch import load_file

import mixq
from mixq.checkpoint import read_header
from mixq.cli._zoo import get_model, save_float_weights
from mixq.cli.main import main
from mixq.sensitivity import SensitivityTable

MODEL = "small-cnn-w16"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    weights = folder / "float.pt"
    save_float_weights(get_model(MODEL).build(), weights)
    generator = torch.Generator().manual_seed(0)
    data = folder / "data.pt"
    torch.save(
        {"inputs": torch.rand(20, 1, 28, 28, generator=generator), "labels": torch.arange(20) % 10},
        data,
    )
    quantized = folder / "q"
    code = main(
        [
            "quantize", "--model", MODEL, "--weights", str(weights), "--recipe", "rmsmp",
            "--act-bits", "4", "--data", str(data), "--calib-images", "20",
            "--batch-size", "20", "-o", str(quantized), "-q",
        ]
    )  # fmt: skip
    assert code == 0
    return weights, data, quantized / "quantized.safetensors"


def _quantize_argv(weights: Path, data: Path, out: Path) -> list[str]:
    # 20 images in 2 batches: one process sums their moments as 0 + b0 + b1, two processes
    # all-reduce b0 + b1, the same float64 sum; so the result can be compared bit for bit.
    return [
        "quantize", "--model", MODEL, "--weights", str(weights), "--recipe", "rmsmp",
        "--act-bits", "4", "--data", str(data), "--calib-images", "20", "--batch-size", "10",
        "--threads", "1", "-o", str(out),
    ]  # fmt: skip


def _train_argv(quantized: Path, data: Path, batch: int, out: Path) -> list[str]:
    return [
        "train", str(quantized), "--data", str(data), "--epochs", "1", "--lr", "0.05",
        "--batch-size", str(batch), "--eval-images", "10", "--threads", "1", "-o", str(out),
    ]  # fmt: skip


def _argv(weights: Path, data: Path, out: Path) -> list[str]:
    return [
        "sensitivity", "--model", MODEL, "--weights", str(weights), "--data", str(data),
        "--images", "10", "--batch-size", "10", "--min-probes", "2", "--max-probes", "6",
        "--tolerance", "0.01", "--threads", "1", "-o", str(out),
    ]  # fmt: skip


def _rank_runs_the_cli(rank: int, ports: list[int], commands: list[list[str]], tmp: str) -> None:
    printed = io.StringIO()
    codes = []
    # The spy records which calibration images this rank's `mixq quantize` was given.
    with (
        contextlib.redirect_stdout(printed),
        mock.patch.object(mixq, "quantize", wraps=mixq.quantize) as spy,
    ):
        for port, argv in zip(ports, commands, strict=True):
            torchrun_env(rank, port)  # one torchrun launch per command, as from a shell
            codes.append(main(argv))  # each starts and ends its own process group
    Path(tmp, f"stdout.{rank}").write_text(printed.getvalue())
    if spy.call_args is not None:
        images = torch.cat([inputs for inputs, _ in spy.call_args.kwargs["calibration_data"]])
        torch.save(images, Path(tmp, f"calibration.{rank}"))
    assert codes == [0] * len(commands), f"rank {rank} exited {codes}"


@pytest.fixture(scope="module")
def two_processes(
    inputs: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One spawn of 2 ranks runs the three commands, each its own torchrun-like launch."""
    weights, data, quantized = inputs
    tmp = tmp_path_factory.mktemp("two")
    commands = [
        _argv(weights, data, tmp / "sens"),
        _train_argv(quantized, data, 5, tmp / "train"),
        _quantize_argv(weights, data, tmp / "quantize"),
    ]
    ports = [free_port() for _ in commands]
    mp.spawn(_rank_runs_the_cli, args=(ports, commands, str(tmp)), nprocs=WORLD)
    return tmp


def test_two_processes_write_the_one_process_table(
    inputs: tuple[Path, Path, Path], two_processes: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    weights, data, _ = inputs
    assert main(_argv(weights, data, tmp_path / "one")) == 0
    one_printed = capsys.readouterr().out
    single = SensitivityTable.load(tmp_path / "one" / "sensitivity.json")
    assert written(two_processes / "sens") == ["sensitivity.json"]
    table = SensitivityTable.load(two_processes / "sens" / "sensitivity.json")
    assert list(table.layers) == list(single.layers)
    for name, layer in single.layers.items():
        got = table.layer(name)
        assert got.probes == layer.probes, name  # the same stopping decisions
        # Products in vmap batches of 3 probes instead of 6: float32 noise only.
        assert np.isclose(got.trace, layer.trace, rtol=1e-5), name
        assert np.allclose(got.row_traces, layer.row_traces, rtol=1e-5, atol=1e-9), name
    assert table.run.hvp_count == single.run.hvp_count
    # Rank 0 prints the table one process prints, then the training line, then the
    # quantize summary; rank 1 nothing.
    rank0 = (two_processes / "stdout.0").read_text().splitlines()
    table_lines = one_printed.splitlines()
    assert rank0[0] == table_lines[0]  # the rows hold float32 noise and the time
    assert rank0[len(table_lines)].startswith("trained to epoch 1")
    assert (two_processes / "stdout.1").read_text() == ""


def test_two_processes_train_the_one_process_model(
    inputs: tuple[Path, Path, Path], two_processes: Path, tmp_path: Path
) -> None:
    _, data, quantized = inputs
    # One process, batch 10; the two processes ran batch 5: the same global batches.
    assert main(_train_argv(quantized, data, 10, tmp_path / "train_one")) == 0
    assert written(two_processes / "train") == written(tmp_path / "train_one")
    want = load_file(tmp_path / "train_one" / "quantized.safetensors")
    got = load_file(two_processes / "train" / "quantized.safetensors")
    assert got.keys() == want.keys()
    for key, value in want.items():
        if value.is_floating_point():  # float32 gradient averages: see _spawn.py
            assert torch.allclose(got[key], value, rtol=1e-5, atol=1e-6), key
        else:
            assert torch.equal(got[key], value), key


def test_two_processes_quantize_as_one_process(
    inputs: tuple[Path, Path, Path], two_processes: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    weights, data, _ = inputs
    assert main(_quantize_argv(weights, data, tmp_path / "one")) == 0
    one_printed = capsys.readouterr().out
    assert written(two_processes / "quantize") == ["quantized.safetensors"]
    want = load_file(tmp_path / "one" / "quantized.safetensors")
    got = load_file(two_processes / "quantize" / "quantized.safetensors")
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(got[key], value), key  # bit for bit: see _quantize_argv
    header = read_header(two_processes / "quantize" / "quantized.safetensors")
    assert header["extra"]["quantize_processes"] == WORLD
    # Each rank was given its own half of the images, rank 0 the first.
    shares = [torch.load(two_processes / f"calibration.{rank}") for rank in range(WORLD)]
    assert [len(share) for share in shares] == [10, 10]
    assert torch.equal(torch.cat(shares), torch.load(data)["inputs"])
    # Rank 0 ends with the summary one process prints.
    rank0 = (two_processes / "stdout.0").read_text().splitlines()
    summary = one_printed.splitlines()
    assert summary and rank0[-len(summary) :] == summary
