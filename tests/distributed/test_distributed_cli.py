"""``mixq sensitivity`` and ``mixq train`` under a torchrun-like environment (2 gloo
processes spawned here, with torchrun's variables): the CLI starts the process group
itself, the table and the trained model equal one process's, and rank 0 alone prints and
writes."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from _spawn import WORLD, free_port, torchrun_env, written
from safetensors.torch import load_file

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
    with contextlib.redirect_stdout(printed):
        for port, argv in zip(ports, commands, strict=True):
            torchrun_env(rank, port)  # one torchrun launch per command, as from a shell
            codes.append(main(argv))  # each starts and ends its own process group
    Path(tmp, f"stdout.{rank}").write_text(printed.getvalue())
    assert codes == [0] * len(commands), f"rank {rank} exited {codes}"


def test_two_processes_write_the_one_process_table_and_model(
    inputs: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, data, quantized = inputs
    assert main(_argv(weights, data, tmp_path / "one")) == 0
    one_printed = capsys.readouterr().out
    single = SensitivityTable.load(tmp_path / "one" / "sensitivity.json")
    # One process, batch 10; below, two processes of batch 5: the same global batches.
    assert main(_train_argv(quantized, data, 10, tmp_path / "train_one")) == 0

    commands = [
        _argv(weights, data, tmp_path / "two"),
        _train_argv(quantized, data, 5, tmp_path / "train_two"),
    ]
    ports = [free_port() for _ in commands]
    mp.spawn(_rank_runs_the_cli, args=(ports, commands, str(tmp_path)), nprocs=WORLD)

    assert written(tmp_path / "two") == ["sensitivity.json"]
    table = SensitivityTable.load(tmp_path / "two" / "sensitivity.json")
    assert list(table.layers) == list(single.layers)
    for name, layer in single.layers.items():
        got = table.layer(name)
        assert got.probes == layer.probes, name  # the same stopping decisions
        # Products in vmap batches of 3 probes instead of 6: float32 noise only.
        assert np.isclose(got.trace, layer.trace, rtol=1e-5), name
        assert np.allclose(got.row_traces, layer.row_traces, rtol=1e-5, atol=1e-9), name
    assert table.run.hvp_count == single.run.hvp_count
    # Rank 0 prints the table one process prints, then the training line; rank 1 nothing.
    rank0 = (tmp_path / "stdout.0").read_text().splitlines()
    table_lines = one_printed.splitlines()
    assert rank0[0] == table_lines[0] and len(rank0) == len(table_lines) + 1
    assert rank0[-1].startswith("trained to epoch 1")
    assert (tmp_path / "stdout.1").read_text() == ""

    assert written(tmp_path / "train_two") == written(tmp_path / "train_one")
    want = load_file(tmp_path / "train_one" / "quantized.safetensors")
    got = load_file(tmp_path / "train_two" / "quantized.safetensors")
    assert got.keys() == want.keys()
    for key, value in want.items():
        if value.is_floating_point():  # float32 gradient averages: see _spawn.py
            assert torch.allclose(got[key], value, rtol=1e-5, atol=1e-6), key
        else:
            assert torch.equal(got[key], value), key
