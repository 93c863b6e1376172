"""``mixq sensitivity`` under a torchrun-like environment (2 gloo processes spawned here):
the CLI starts the process group itself, the table equals one process's, and rank 0 alone
prints and writes."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from _spawn import WORLD, free_port, torchrun_env, written

from mixq.cli._zoo import get_model, save_float_weights
from mixq.cli.main import main
from mixq.sensitivity import SensitivityTable

MODEL = "small-cnn-w16"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
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
    return weights, data


def _argv(weights: Path, data: Path, out: Path) -> list[str]:
    return [
        "sensitivity", "--model", MODEL, "--weights", str(weights), "--data", str(data),
        "--images", "10", "--batch-size", "10", "--min-probes", "2", "--max-probes", "6",
        "--tolerance", "0.01", "--threads", "1", "-o", str(out),
    ]  # fmt: skip


def _rank_runs_the_cli(rank: int, port: int, argv: list[str], tmp: str) -> None:
    torchrun_env(rank, port)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    Path(tmp, f"stdout.{rank}").write_text(printed.getvalue())
    assert code == 0, f"rank {rank} exited {code}"


def test_two_processes_write_the_one_process_table(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, data = inputs
    assert main(_argv(weights, data, tmp_path / "one")) == 0
    one_printed = capsys.readouterr().out
    single = SensitivityTable.load(tmp_path / "one" / "sensitivity.json")

    argv = _argv(weights, data, tmp_path / "two")
    mp.spawn(_rank_runs_the_cli, args=(free_port(), argv, str(tmp_path)), nprocs=WORLD)

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
    # Rank 0 prints the table one process prints; rank 1 prints nothing.
    rank0 = (tmp_path / "stdout.0").read_text()
    assert rank0.splitlines()[0] == one_printed.splitlines()[0]
    assert len(rank0.splitlines()) == len(one_printed.splitlines())
    assert (tmp_path / "stdout.1").read_text() == ""
