"""Activation calibration under torch.distributed (gloo, 2 processes spawned here) sets the
clips of one process calibrating on every rank's batches, rank 0's first."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import mixq
from mixq.nn.act_quant import ActQuantizer

WORLD = 2


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.Flatten(),
        nn.Linear(16 * 24 * 24, 10),
    )


def _batches() -> list[torch.Tensor]:
    # 12 x 16 x 24 x 24 values after the first conv: more than the 2^16 kept per batch,
    # so the subsampling generator's position on each rank matters. Rank 1's batches are
    # wider-ranged, so a per-rank clip would differ from the union's.
    g = torch.Generator().manual_seed(1)
    return [torch.randn(12, 3, 24, 24, generator=g) * (1 + 2 * (i >= 2)) for i in range(4)]


def _quantized(method: str) -> nn.Module:
    recipe = mixq.Recipe.preset("rmsmp", act_bits=4, first_last=None)
    return mixq.quantize(_model(), replace(recipe, act_method=method), progress=False)


def _clips(model: nn.Module) -> dict[str, tuple[float, bool | None]]:
    return {
        name: (float(m.alpha.detach()), m.signed)
        for name, m in model.named_modules()
        if isinstance(m, ActQuantizer)
    }


def _rank_calibrates_its_share(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        share = _batches()[rank * 2 : rank * 2 + 2]
        results = {}
        for method in ("mse", "percentile"):
            model = _quantized(method)
            mixq.calibrate(model, share, progress=False)
            results[method] = _clips(model)
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_calibrate_as_one_process_on_all_batches(tmp_path: Path) -> None:
    expected, per_rank = {}, {}
    for method in ("mse", "percentile"):
        single = _quantized(method)
        mixq.calibrate(single, _batches(), progress=False)
        expected[method] = _clips(single)
        alone = copy.deepcopy(_quantized(method))
        mixq.calibrate(alone, _batches()[:2], progress=False)
        per_rank[method] = _clips(alone)
    # The check has teeth: rank 0's batches alone give other clips.
    assert per_rank["mse"] != expected["mse"]
    out = str(tmp_path / "clips")
    mp.spawn(_rank_calibrates_its_share, args=(str(tmp_path / "init"), out), nprocs=WORLD)
    for rank in range(WORLD):
        got = torch.load(f"{out}.{rank}")
        assert got == expected, f"rank {rank}"


def test_skip_draws_moves_the_generator_as_observing_would() -> None:
    big, small = torch.randn(70_000), torch.randn(100)
    seen = ActQuantizer(8)
    seen.start_calibration()
    seen(big)
    seen(small)
    skipped = ActQuantizer(8)
    skipped.start_calibration()
    skipped.skip_draws(seen.observed_sizes)
    assert seen.observed_sizes == [70_000, 100]
    assert torch.equal(seen._generator.get_state(), skipped._generator.get_state())


def test_counting_keeps_no_sample() -> None:
    q = ActQuantizer(8)
    q.start_calibration(counting=True)
    q(torch.randn(3, 5))
    assert q.observed_sizes == [15]
    sample, _ = q.observations()
    assert sample.numel() == 0
    with pytest.raises(mixq.errors.CalibrationError, match="no activations"):
        q.finish_calibration()
