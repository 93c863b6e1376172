"""The Hessian pass on 2 gloo processes (spawned here) gives the one-process table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mixq.sensitivity import HutchinsonConfig, SensitivityTable, hutchinson_traces

WORLD = 2
# 5 probes per product over 2 ranks: rank 0 computes 3, rank 1 computes 2 of each.
CONFIG = HutchinsonConfig(tolerance=0.02, min_probes=4, max_probes=15, probes_per_product=5)


def _net_and_data() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    data = [(torch.randn(6, 2, 6, 6), torch.tensor([0, 1, 2, 0, 1, 2]))]
    return net.eval(), data


def _rank_table(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        net, data = _net_and_data()
        hutchinson_traces(net, data, CONFIG, progress=False).save(f"{out}.{rank}.json")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_give_the_one_process_table(tmp_path: Path) -> None:
    net, data = _net_and_data()
    single = hutchinson_traces(net, data, CONFIG, progress=False)
    out = str(tmp_path / "table")
    mp.spawn(_rank_table, args=(str(tmp_path / "init"), out), nprocs=WORLD)
    for rank in range(WORLD):
        table = SensitivityTable.load(f"{out}.{rank}.json")
        assert list(table.layers) == list(single.layers)
        for name, layer in single.layers.items():
            got = table.layer(name)
            assert got.probes == layer.probes  # the same stopping decisions
            # Products computed in vmap batches of 3 or 2 probes instead of 5: float noise.
            assert np.isclose(got.trace, layer.trace, rtol=1e-5)
            assert np.allclose(got.row_traces, layer.row_traces, rtol=1e-5, atol=1e-9)
            assert np.allclose(got.row_stderr, layer.row_stderr, rtol=1e-4, atol=1e-9)
