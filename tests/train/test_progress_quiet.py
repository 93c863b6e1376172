"""Progress bars show on a terminal and stay quiet when output is not one (a log file, a
pipe, CI): ``progress=True`` leaves the choice to tqdm's terminal check."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import mixq
from mixq.train import TrainConfig, train


def _run(progress: bool) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    qnet = mixq.quantize(net, "rmsmp", calibration_data=[x], progress=progress)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    train(qnet, loader, TrainConfig(epochs=1, lr=0.01), progress=progress)


def test_no_bar_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert not sys.stderr.isatty()
    _run(progress=True)
    captured = capsys.readouterr()
    assert "it/s" not in captured.err and "%|" not in captured.err


def test_a_bar_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    _run(progress=True)
    assert "%|" in capsys.readouterr().err  # the same call draws bars where there is a terminal
