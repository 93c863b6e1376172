"""The CPU latency table: measured per layer and candidate, and cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import mixq.hw.cpu_latency as cpu_latency
from mixq.errors import HardwareCostError
from mixq.hw import LatencyTable


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def test_measures_every_layer_and_candidate_and_reuses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cpu.json"
    example = torch.randn(2, 3, 8, 8)
    table = cpu_latency.measure_cpu_latency(
        _net(), example, ["fixed-4", "sp2-4"], repeats=2, cache=cache, progress=False
    )
    assert table.unit == "s" and table.layers == ("0", "3")
    assert all(0 < table.get(layer, c) < 1.0 for layer in ("0", "3") for c in ("fixed-4", "sp2-4"))
    assert table.metadata["inputs"] == {"0": [2, 3, 8, 8], "3": [2, 288]}
    assert LatencyTable.load(cache) == table

    def no_timing(*args: object) -> float:
        raise AssertionError("a cached entry was measured again")

    monkeypatch.setattr(cpu_latency, "_time_layer", no_timing)
    again = cpu_latency.measure_cpu_latency(
        _net(), example, ["sp2-4"], repeats=2, cache=cache, progress=False
    )
    assert again.get("0", "sp2-4") == table.get("0", "sp2-4")
    # Other conditions (here the input shape) invalidate the cache.
    with pytest.raises(AssertionError, match="measured again"):
        cpu_latency.measure_cpu_latency(
            _net(), torch.randn(1, 3, 8, 8), ["sp2-4"], repeats=2, cache=cache, progress=False
        )


def test_bad_requests() -> None:
    with pytest.raises(HardwareCostError, match="repeats must be >= 1"):
        cpu_latency.measure_cpu_latency(_net(), torch.randn(1, 3, 8, 8), ["fixed-4"], repeats=0)
    with pytest.raises(HardwareCostError, match="no Conv2d or Linear"):
        cpu_latency.measure_cpu_latency(nn.ReLU(), torch.randn(1, 3), ["fixed-4"], progress=False)
