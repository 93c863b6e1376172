"""Latency lookup table measured on this CPU: each layer quantised with each candidate.

The one module of :mod:`mixq.hw` that uses torch (it times torch layers); nothing else in
the package imports it. What it measures is mixq's own quantised layer
(:class:`~mixq.nn.layers.QuantConv2d` / :class:`~mixq.nn.layers.QuantLinear`, every row at
one candidate) running forward on this machine: fake quantisation plus a float convolution,
since PyTorch has no low-bit CPU kernels. So a candidate's time here reflects the cost of
its fake-quantisation, not of integer arithmetic at its bits.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from mixq.assignment import RowAssignment
from mixq.errors import HardwareCostError
from mixq.hw.latency import LatencyTable
from mixq.layer_hooks import run_with_layer_hooks
from mixq.machine import cpu_name
from mixq.nn.layers import QuantConv2d, QuantLinear
from mixq.schemes import Candidate


@torch.no_grad()
def measure_cpu_latency(
    model: nn.Module,
    example: Any,
    candidates: Iterable[Candidate | str],
    *,
    act_bits: int = 8,
    repeats: int = 5,
    cache: str | Path | None = None,
    progress: bool = True,
) -> LatencyTable:
    """Median seconds of one forward pass of every Conv2d/Linear of ``model`` on its input
    from ``example`` (a batch as :func:`mixq.calibrate` takes it), quantised with each
    candidate for all rows, over ``repeats`` runs after one warm-up.

    With ``cache``, entries measured before under the same conditions (processor, torch
    version, threads, input shapes, activation bits, repeats) are reused and new ones
    added; the file is rewritten atomically.
    """
    if repeats < 1:
        raise HardwareCostError(f"repeats must be >= 1, got {repeats}")
    parsed = [Candidate.parse(c) for c in candidates]
    inputs = _layer_inputs(model, example)
    if not inputs:
        raise HardwareCostError("the model has no Conv2d or Linear layer to time")
    conditions = {
        "processor": cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "act_bits": act_bits,
        "repeats": repeats,
        "inputs": {name: list(x.shape) for name, (_, x) in inputs.items()},
    }
    values = _cached(cache, conditions)
    todo = [(n, c) for n in inputs for c in parsed if str(c) not in values.get(n, {})]
    for name, candidate in tqdm(todo, desc="timing layers", disable=None if progress else True):
        layer, x = inputs[name]
        values.setdefault(name, {})[str(candidate)] = _time_layer(
            layer, x, candidate, act_bits, repeats
        )
    table = LatencyTable("s", values, f"cpu:{conditions['processor']}", conditions)
    if cache is not None:
        table.save(cache)
    return table


def _layer_inputs(model: nn.Module, example: Any) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    inputs: dict[str, tuple[nn.Module, torch.Tensor]] = {}

    def record(name: str, module: nn.Module, x: torch.Tensor, _out: torch.Tensor) -> None:
        inputs.setdefault(name, (module, x.detach()))

    run_with_layer_hooks(model, example, record)
    return inputs


def _cached(cache: str | Path | None, conditions: dict[str, Any]) -> dict[str, dict[str, float]]:
    if cache is None or not Path(cache).is_file():
        return {}
    table = LatencyTable.load(cache)
    if table.unit != "s" or dict(table.metadata) != conditions:
        return {}  # measured under other conditions: start again
    return {layer: dict(row) for layer, row in table.values.items()}


def _time_layer(
    layer: nn.Module, x: torch.Tensor, candidate: Candidate, act_bits: int, repeats: int
) -> float:
    quant = _quantised(layer, candidate, act_bits, x)
    quant(x)  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        quant(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _quantised(layer: nn.Module, candidate: Candidate, act_bits: int, x: torch.Tensor) -> nn.Module:
    if not isinstance(layer, nn.Conv2d | nn.Linear):
        raise HardwareCostError(f"cannot time a {type(layer).__name__}: Conv2d or Linear only")
    assignment = RowAssignment.uniform(candidate, int(layer.weight.shape[0]))
    if isinstance(layer, nn.Conv2d):
        quant: QuantConv2d | QuantLinear = QuantConv2d.from_float(
            layer, assignment, act_bits=act_bits
        )
    else:
        quant = QuantLinear.from_float(layer, assignment, act_bits=act_bits)
    quant.weight_quant.init_scales(quant.weight_rows(), method="max")
    if quant.act_quant is not None:
        quant.act_quant.start_calibration()
        quant(x)
        quant.act_quant.finish_calibration()
    return quant.eval()
