"""Exact traces on 2 gloo processes (spawned here): each takes every other chunk of
samples, and both end with the one-process table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mixq.sensitivity import SensitivityTable, gauss_newton_traces

WORLD = 2
MEMORY_MB = 0.004  # under one sample (3 x 264 float64 gradients, 6.3 kB): 10 chunks of 1


def _net_and_data() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    generator = torch.Generator().manual_seed(2)
    data = [(torch.randn(10, 2, 6, 6, generator=generator), torch.arange(10) % 3)]
    return net.double().eval(), [(x.double(), y) for x, y in data]


def _rank_table(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        net, data = _net_and_data()
        table = gauss_newton_traces(net, data, memory_mb=MEMORY_MB, progress=False)
        table.save(f"{out}.{rank}.json")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_give_the_one_process_exact_table(tmp_path: Path) -> None:
    net, data = _net_and_data()
    single = gauss_newton_traces(net, data, memory_mb=MEMORY_MB, progress=False)
    out = str(tmp_path / "table")
    mp.spawn(_rank_table, args=(str(tmp_path / "init"), out), nprocs=WORLD)
    for rank in range(WORLD):
        table = SensitivityTable.load(f"{out}.{rank}.json")
        assert table.run.samples == single.run.samples == 10
        for name, layer in single.layers.items():
            # the same float64 terms, summed in another order across the two ranks
            assert np.allclose(table.layer(name).row_traces, layer.row_traces, rtol=1e-12)
