"""Helpers the distributed tests share: a quantised MLP, its data, and a gloo group."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

import mixq
from mixq.data import EpochShuffleSampler

WORLD = 2
SAMPLES = 16  # two steps of a global batch of 8 per epoch


def problem() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 8, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()  # 3 classes
    return x, y


def loader(batch: int) -> torch.utils.data.DataLoader:
    x, y = problem()
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch, sampler=EpochShuffleSampler(len(dataset), seed=3)
    )


def quantized_mlp() -> nn.Module:
    """Seeded: the same model in every process (built before any process group, so that
    calibration runs as in one process)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x, _ = problem()
    return mixq.quantize(
        net,
        mixq.Recipe.preset("rmsmp", first_last=None, act_bits=4),
        calibration_data=[x],
        progress=False,
    )


def torchrun_env(rank: int, port: int) -> None:
    """The variables torchrun sets, for code that starts its own process group."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}


def assert_close_states(
    got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], where: str
) -> None:
    assert got.keys() == want.keys(), where
    for key, value in want.items():
        if value.is_floating_point():
            # Gradients averaged over two ranks ((g0 + g1) / 2) instead of one mean over
            # the batch of 8: float32 sums in another order, a few ulp per step.
            assert torch.allclose(got[key], value, rtol=1e-5, atol=1e-6), f"{where}: {key}"
        else:
            assert torch.equal(got[key], value), f"{where}: {key}"


def written(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
