"""Hutchinson estimates of Hessian traces, per layer and per row, over a data loader.

For a Rademacher vector ``v`` (entries ±1), ``E[v_i (Hv)_i] = H_ii``: summing ``v * Hv`` over
a row estimates the row's trace, over a layer the layer's trace. By default each product
probes one layer (``v`` is zero on the others, and only that layer's weight is an input of
the transform, so layers before it need no tangents): the estimate then carries no
cross-layer Hessian terms, whose noise otherwise dominates. On the pretrained ResNet-20
(``benchmarks/results/sensitivity_cost.json``) 200 whole-model products left 18 of 20
layers above 5% relative standard error, two of them above 500%, while per-layer probing
brought 14 of 20 under 5% with at most 64 products per layer, each a third the cost. A
layer stops being probed once its relative standard error (or the relative change of its
mean) is under the tolerance, so products go where the noise is.

Each product averages the Hessians of the next ``batches_per_probe`` batches of the loader
(cycled): the estimate is of the trace of the loss's Hessian over the loader's data, and
its standard error counts mini-batch noise as well as probe noise. For the trace over a
fixed set, let one probe span all its batches.

Probes are computed ``probes_per_product`` at a time in one vectorised product
(``torch.func.vmap`` over the probes; on one shared batch the primal forward and backward
are computed once for all of them), then added to the layer's samples one by one under the
stopping rule, exactly as if computed singly: the estimator and its stopping rule are
unchanged, only a layer's last product may compute probes that go unused (they count in
``hvp_count``). Under ``torch.distributed`` (torchrun), every rank passes the same data and
config; the probes are shared out among the ranks (:mod:`mixq.sensitivity.distributed`)
and every rank ends with the same table, the one a single process computes.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from mixq.batches import cycle_pairs
from mixq.calibrate import model_device
from mixq.errors import SensitivityError
from mixq.plan import LayerShape
from mixq.sensitivity.config import HutchinsonConfig
from mixq.sensitivity.distributed import ProbeShare as _ProbeShare
from mixq.sensitivity.folded import chosen_layers, folded_float_copy, layer_weight
from mixq.sensitivity.hvp import BatchedHvp, LossFn, Weights, make_batched_hvp
from mixq.sensitivity.moments import RowSampleStats
from mixq.sensitivity.table import LayerSensitivity, SensitivityTable, TraceRun
from mixq.shapes import measure_layer_shapes

_RAN_OUT_HINT = (
    "; pass a re-iterable (a list or a DataLoader), or lower max_probes or batches_per_probe"
)


def hutchinson_traces(
    model: nn.Module,
    data: Iterable[Any],
    config: HutchinsonConfig | None = None,
    *,
    layers: Sequence[str] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    model_name: str = "",
    weights_path: str = "",
    progress: bool = True,
) -> SensitivityTable:
    """Estimate the Hessian trace of every chosen layer and of each of its rows.

    Args:
        model: a float model (or a quantised one: its layers are baked back to float).
        data: ``(inputs, targets)`` batches; re-iterable (a list or a DataLoader) if the run
            may need more batches than one pass holds.
        config: estimator settings and stopping rule (:class:`HutchinsonConfig`).
        layers: module names (default: every Conv2d/Linear, as
            :func:`mixq.quantizable_layer_names` lists them).
        loss_fn: ``loss_fn(outputs, targets)``, a mean over the batch.
        model_name, weights_path: recorded in the table's :class:`TraceRun`.
        progress: show a tqdm bar.
    """
    config = config or HutchinsonConfig()
    start = time.perf_counter()
    target = folded_float_copy(model, fold_bn=config.fold_bn).requires_grad_(False)
    names = chosen_layers(target, layers)
    weights = {n: layer_weight(target, n) for n in names}
    stream = _cycle_pairs(data, model_device(target))
    first = next(stream)
    stream = itertools.chain([first], stream)
    shapes = measure_layer_shapes(target, first)
    stats = {n: RowSampleStats(weights[n].shape[0]) for n in names}
    hvps = make_batched_hvp(target, loss_fn, config.hvp_mode)
    generator = torch.Generator().manual_seed(config.seed)
    groups = [[n] for n in names] if config.probe_scope == "layer" else [names]
    share = _ProbeShare.current()
    hvp_count = samples = 0
    bar = tqdm(
        total=config.max_probes * len(groups),
        desc="hessian",
        disable=None if progress else True,
        leave=False,
    )
    try:
        while True:
            open_groups = [g for g in groups if not all(stats[n].done(config) for n in g)]
            if not open_groups:
                break
            for group in open_groups:
                count = min(config.probes_per_product, config.max_probes - stats[group[0]].count)
                added, seen = _probe(
                    hvps, weights, group, stats, stream, generator, config, count, share
                )
                samples += seen
                hvp_count += count * config.batches_per_probe
                bar.update(added)
            worst = max(s.score(config) for s in stats.values())
            bar.set_postfix_str(f"{len(open_groups)} open, worst {config.stop_on} {worst:.1%}")
    finally:
        bar.close()
    run = TraceRun(
        model=model_name,
        weights=weights_path,
        loss=getattr(loss_fn, "__name__", type(loss_fn).__name__),
        config=config,
        probes=max(s.count for s in stats.values()),
        hvp_count=hvp_count,
        samples=samples,
        converged=all(s.converged(config) for s in stats.values()),
        max_rel_stderr=max(_rel_stderr(s) for s in stats.values()),
        seconds=time.perf_counter() - start,
    )
    return SensitivityTable({n: _layer(stats[n], shapes[n]) for n in names}, run)


def _probe(
    hvps: BatchedHvp,
    weights: dict[str, Tensor],
    group: list[str],
    stats: dict[str, RowSampleStats],
    stream: Iterator[tuple[Tensor, Tensor]],
    generator: torch.Generator,
    config: HutchinsonConfig,
    count: int,
    share: _ProbeShare,
) -> tuple[int, int]:
    """``count`` Rademacher probes of the layers in ``group``, computed together; their
    samples are added one by one while the group is still open. Returns (probes added,
    samples those probes read)."""
    primal = {f"{n}.weight": weights[n] for n in group}
    probes = [{key: _rademacher(w, generator) for key, w in primal.items()} for _ in range(count)]
    # Probe k reads the next batches_per_probe batches, as it would one probe at a time.
    batches = [[next(stream) for _ in range(config.batches_per_probe)] for _ in range(count)]
    mine = share.indices(count)
    # On the CPU, whatever the model's device: the statistics read them as numpy arrays and
    # the ranks all-reduce them over gloo (mixq.sensitivity.distributed).
    row_sums = torch.zeros(count, sum(stats[n].rows for n in group), dtype=torch.float64)
    if mine:
        hv = _averaged_hvps(hvps, primal, [probes[k] for k in mine], [batches[k] for k in mine])
        for slot, k in enumerate(mine):
            row_sums[k] = torch.cat(
                [_row_sums(probes[k][f"{n}.weight"] * hv[f"{n}.weight"][slot]) for n in group]
            )
    share.combine(row_sums)
    added = seen = 0
    for k in range(count):
        if all(stats[n].done(config) for n in group):
            break
        start = 0
        for name in group:
            rows = stats[name].rows
            stats[name].add(row_sums[k, start : start + rows].numpy())
            start += rows
        added += 1
        seen += sum(int(inputs.shape[0]) for inputs, _ in batches[k])
    return added, seen


def _rel_stderr(stats: RowSampleStats) -> float:
    mean = abs(stats.mean())
    return stats.stderr() / mean if mean > 0 else (0.0 if stats.stderr() == 0 else float("inf"))


def _layer(stats: RowSampleStats, shape: LayerShape) -> LayerSensitivity:
    return LayerSensitivity(
        shape=shape,
        probes=stats.count,
        trace=stats.mean(),
        trace_stderr=stats.stderr(),
        row_traces=stats.row_means(),
        row_stderr=stats.row_stderr(),
    )


def _cycle_pairs(data: Iterable[Any], device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """The batches of ``data`` as ``(inputs, targets)`` on ``device``, round and round."""
    pairs = cycle_pairs(data, SensitivityError, ran_out_hint=_RAN_OUT_HINT)
    return ((inputs.to(device), targets.to(device)) for inputs, targets in pairs)


def _rademacher(like: Tensor, generator: torch.Generator) -> Tensor:
    # Drawn by a CPU generator and moved to the weight's device and dtype: the same probes
    # on every device (and every rank), so CPU and GPU tables differ by float rounding only.
    signs = torch.randint(0, 2, like.shape, generator=generator, dtype=torch.int8)
    return (signs * 2 - 1).to(device=like.device, dtype=like.dtype)


def _averaged_hvps(
    hvps: BatchedHvp,
    weights: Weights,
    probes: list[Weights],
    batches: list[list[tuple[Tensor, Tensor]]],
) -> Weights:
    """``Hv`` of probe k (on a leading axis) for the sample-weighted mean loss over its
    batches ``batches[k]``."""
    total: Weights = {}
    seen = torch.zeros(len(probes), dtype=torch.float64)
    for step in range(len(batches[0])):
        pairs = [probe_batches[step] for probe_batches in batches]
        sizes = torch.tensor([float(x.shape[0]) for x, _ in pairs], dtype=torch.float64)
        for key, value in _hvps_on(hvps, weights, probes, pairs).items():
            part = value.detach() * sizes.to(value).view(-1, *[1] * (value.dim() - 1))
            total[key] = total[key] + part if key in total else part
        seen += sizes
    return {k: v / seen.to(v).view(-1, *[1] * (v.dim() - 1)) for k, v in total.items()}


def _hvps_on(
    hvps: BatchedHvp, weights: Weights, probes: list[Weights], pairs: list[tuple[Tensor, Tensor]]
) -> Weights:
    """Probe k's product on batch ``pairs[k]``, vectorised over the probes."""
    vs = {key: torch.stack([p[key] for p in probes]) for key in weights}
    first_x, first_y = pairs[0]
    if all(x is first_x and y is first_y for x, y in pairs):  # one batch (a fixed set)
        return hvps(weights, vs, first_x, first_y, True)
    if all(x.shape == first_x.shape and y.shape == first_y.shape for x, y in pairs):
        xs, ys = torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])
        return hvps(weights, vs, xs, ys, False)
    parts = [  # batches of different sizes: one probe at a time
        hvps(weights, {k: v[i : i + 1] for k, v in vs.items()}, x, y, True)
        for i, (x, y) in enumerate(pairs)
    ]
    return {key: torch.cat([part[key] for part in parts]) for key in weights}


def _row_sums(product: Tensor) -> Tensor:
    return product.reshape(product.shape[0], -1).sum(dim=1).double().cpu()
