"""Exact per-layer and per-row Hessian traces from per-sample Jacobians (Gauss-Newton).

The loss's Hessian with respect to one layer's weights ``W`` is
``J^T H_z J + sum_c (dL/dz_c) d^2 z_c / dW^2``, with ``J = dz/dW`` the Jacobian of the
model's outputs and ``H_z`` the Hessian of the loss in the outputs. In a network that is
piecewise linear in each layer's weights (convolutions, linear layers, folded BatchNorm,
ReLU/ReLU6, pooling, residual sums: every CIFAR ResNet and MobileNet here) a layer's weights
meet each path to the output once and every activation has zero second derivative almost
everywhere, so ``d^2 z / dW^2 = 0``: the layer's diagonal Hessian block *is* its
Gauss-Newton block. Its trace then needs no random probes at all:

    tr(J^T H_z J) = sum_n sum_k lambda_nk ||d (u_nk . z_n) / dW||^2

with ``H_z(n) = sum_k lambda_nk u_nk u_nk^T`` (at most C terms per sample for C outputs),
so one per-sample gradient per (sample, eigenvector) gives every layer's and every row's
trace exactly, in one pass over the data. On ResNet-20 this is seconds where Hutchinson
needs hundreds of Hessian-vector products for a 5% standard error
(``benchmarks/sensitivity_cost.py``).

Whether the model is piecewise linear in a layer is not assumed: on the first samples a
Gaussian direction ``v`` per layer is measured both ways, ``v^T H v`` (one Hessian-vector
product) against ``v^T J^T H_z J v`` (one Jacobian-vector product); the largest relative gap
is recorded in the table (``TraceRun.hessian_gap``), and a gap above ``GAP_WARNING`` (GELU,
LayerNorm, attention) warns that the table holds Gauss-Newton traces, the positive part of
the Hessian that K-FAC and many sensitivity methods use, not the Hessian's own.

Under ``torch.distributed`` each rank takes every N-th chunk of samples and the row sums
are summed over ranks, so N processes give one process's table (up to float summation
order).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, hessian, jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from mixq.batches import as_pair
from mixq.calibrate import model_device
from mixq.errors import SensitivityError
from mixq.plan import LayerShape
from mixq.sensitivity.config import HutchinsonConfig
from mixq.sensitivity.folded import chosen_layers, folded_float_copy, layer_weight
from mixq.sensitivity.hvp import LossFn, Weights, make_hvp
from mixq.sensitivity.table import LayerSensitivity, SensitivityTable, TraceRun
from mixq.shapes import measure_layer_shapes

log = logging.getLogger("mixq")

METHOD = "gauss-newton"
GAP_WARNING = 1e-3  # relative; float32 rounding of a piecewise-linear model stays near 1e-6
CHECK_SAMPLES = 16  # samples of the first batch the Hessian-equals-Gauss-Newton check uses


def gauss_newton_traces(
    model: nn.Module,
    data: Iterable[Any],
    *,
    layers: Sequence[str] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    fold_bn: bool = True,
    max_batches: int | None = None,
    memory_mb: float = 512.0,
    seed: int = 0,
    hessian_gap: float | None = None,
    model_name: str = "",
    weights_path: str = "",
    progress: bool = True,
) -> SensitivityTable:
    """Each chosen layer's and row's Hessian trace, exactly, over one pass of ``data``.

    The traces are of the Hessian of the mean loss over every sample of ``data`` (or of its
    first ``max_batches`` batches), as :func:`hutchinson_traces` estimates them on the same
    data, with zero standard error.

    Args:
        model: a float model (or a quantised one: its layers are baked back to float).
        data: ``(inputs, targets)`` batches, read once.
        layers: module names (default: every Conv2d/Linear).
        loss_fn: ``loss_fn(outputs, targets)``, the mean of per-sample losses (checked).
        fold_bn: traces with respect to BN-folded weights, which the quantiser sees.
        max_batches: read at most this many batches.
        memory_mb: bound on the per-sample gradients held at once (sets the chunk size).
        seed: seeds the check's random directions.
        hessian_gap: the check's result when :func:`gauss_newton_gap` already measured it
            on the same model, data and seed (the check is then not repeated).
        model_name, weights_path: recorded in the table's :class:`TraceRun`.
        progress: show a tqdm bar.

    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> data = [(torch.randn(16, 4), torch.randint(0, 3, (16,)))]
    >>> table = gauss_newton_traces(net, data, progress=False)
    >>> sorted(table.layers), table.run.method, table.run.hessian_gap < 1e-4
    (['0', '2'], 'gauss-newton', True)
    """
    if memory_mb <= 0 or not math.isfinite(memory_mb):
        raise SensitivityError(f"memory_mb must be a positive number, got {memory_mb!r}")
    if max_batches is not None and max_batches < 1:
        raise SensitivityError(f"max_batches must be >= 1, got {max_batches}")
    start = time.perf_counter()
    target = folded_float_copy(model, fold_bn=fold_bn).requires_grad_(False)
    names = chosen_layers(target, layers)
    weights = {f"{n}.weight": layer_weight(target, n) for n in names}
    device = model_device(target)
    batches = _read_batches(data, device, max_batches)
    shapes = measure_layer_shapes(target, batches[0])
    rows = {key: torch.zeros(w.shape[0], dtype=torch.float64) for key, w in weights.items()}
    gap = hessian_gap
    if gap is None:
        gap = _hessian_gap(target, weights, batches[0], loss_fn, seed)
    if gap > GAP_WARNING:
        log.warning(
            "the model is not piecewise linear in every measured layer (Hessian and "
            "Gauss-Newton differ by %.1e along a random direction): the table holds "
            "Gauss-Newton traces",
            gap,
        )
    samples = _accumulate(target, weights, batches, loss_fn, rows, memory_mb, progress)
    table_layers = {n: _exact_layer(rows[f"{n}.weight"] / samples, shapes[n]) for n in names}
    run = TraceRun(
        model=model_name,
        weights=weights_path,
        loss=getattr(loss_fn, "__name__", type(loss_fn).__name__),
        config=HutchinsonConfig(fold_bn=fold_bn, seed=seed),
        probes=0,
        hvp_count=len(names),  # the check's products
        samples=samples,
        converged=True,
        max_rel_stderr=0.0,
        seconds=time.perf_counter() - start,
        method=METHOD,
        hessian_gap=gap,
    )
    return SensitivityTable(table_layers, run)


def gauss_newton_gap(
    model: nn.Module,
    data: Iterable[Any],
    *,
    layers: Sequence[str] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    fold_bn: bool = True,
    seed: int = 0,
) -> float:
    """The check alone (cheap: one Hessian-vector product per layer on a few samples of the
    first batch): near 0 when :func:`gauss_newton_traces` gives the Hessian's traces,
    above ``GAP_WARNING`` when the model is curved in some layer's weights.

    >>> import torch
    >>> from torch import nn
    >>> data = [(torch.randn(8, 3), torch.randint(0, 2, (8,)))]
    >>> gauss_newton_gap(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), data) < 1e-4
    True
    >>> gauss_newton_gap(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), data) > 1e-3
    True
    """
    target = folded_float_copy(model, fold_bn=fold_bn).requires_grad_(False)
    names = chosen_layers(target, layers)
    weights = {f"{n}.weight": layer_weight(target, n) for n in names}
    batch = _read_batches(data, model_device(target), 1)[0]
    return _hessian_gap(target, weights, batch, loss_fn, seed)


def _read_batches(
    data: Iterable[Any], device: torch.device, max_batches: int | None
) -> list[tuple[Tensor, Tensor]]:
    batches: list[tuple[Tensor, Tensor]] = []
    for batch in data:
        inputs, targets = as_pair(batch, SensitivityError)
        batches.append((inputs.to(device), targets.to(device)))
        if max_batches is not None and len(batches) == max_batches:
            break
    if not batches:
        raise SensitivityError("the data yielded no batch")
    return batches


def _outputs(model: nn.Module, weights: Weights, inputs: Tensor) -> Tensor:
    # The fused CPU attention kernels have no forward-mode AD nor double backward.
    with sdpa_kernel(SDPBackend.MATH):
        out = functional_call(model, weights, (inputs,))
    if not isinstance(out, Tensor):
        raise SensitivityError(f"the model must return one tensor, got {type(out).__name__}")
    return out


def _output_hessians(loss_fn: LossFn, outputs: Tensor, targets: Tensor) -> Tensor:
    """``H_z`` of each sample's loss in its outputs, ``(n, C, C)``; checks that the batch
    loss is the mean of the per-sample losses (what the trace formula needs)."""

    def one(z: Tensor, y: Tensor) -> Tensor:
        return loss_fn(z.unsqueeze(0), y.unsqueeze(0))

    per_sample = vmap(one)(outputs, targets)
    whole = loss_fn(outputs, targets)
    if not torch.allclose(whole, per_sample.mean(), rtol=1e-4, atol=1e-6):
        raise SensitivityError(
            "the loss is not the mean of per-sample losses (loss_fn must reduce by 'mean'), "
            f"{float(whole):.6g} against {float(per_sample.mean()):.6g}"
        )
    flat = outputs.reshape(outputs.shape[0], -1)

    def flat_one(z: Tensor, y: Tensor) -> Tensor:
        return one(z.reshape(outputs.shape[1:]), y)

    return vmap(hessian(flat_one))(flat, targets).detach()


def _accumulate(
    model: nn.Module,
    weights: Weights,
    batches: list[tuple[Tensor, Tensor]],
    loss_fn: LossFn,
    rows: dict[str, Tensor],
    memory_mb: float,
    progress: bool,
) -> int:
    """Add every sample's ``sum_k lambda_k g_k^2``, summed within rows, to ``rows``;
    returns the number of samples (over all ranks)."""
    rank, world = _rank_world()
    params = sum(w.numel() for w in weights.values())
    element_size = max(w.element_size() for w in weights.values())
    total = sum(int(x.shape[0]) for x, _ in batches)
    bar = tqdm(total=total, desc="gauss-newton", disable=None if progress else True, leave=False)
    chunk_index = 0
    try:
        for inputs, targets in batches:
            with torch.no_grad():
                outputs = _outputs(model, weights, inputs)
            lambdas, vectors = torch.linalg.eigh(_output_hessians(loss_fn, outputs, targets))
            # one gradient of every weight per (sample, eigenvector), all C eigenvectors
            per_sample = params * vectors.shape[-1] * element_size
            chunk = max(1, int(memory_mb * 2**20 // per_sample))
            for lo in range(0, inputs.shape[0], chunk):
                hi = min(lo + chunk, inputs.shape[0])
                if chunk_index % world == rank:
                    eigen = (lambdas[lo:hi], vectors[lo:hi])
                    _add_chunk(model, weights, inputs[lo:hi], outputs.shape[1:], eigen, rows)
                chunk_index += 1
                bar.update(hi - lo)
    finally:
        bar.close()
    if world > 1:
        for value in rows.values():
            dist.all_reduce(value)
    return total


def _add_chunk(
    model: nn.Module,
    weights: Weights,
    inputs: Tensor,
    out_shape: torch.Size,
    eigen: tuple[Tensor, Tensor],
    rows: dict[str, Tensor],
) -> None:
    """Per-sample gradients of ``u_k . z`` for every eigenvector ``u_k`` of each sample's
    ``H_z`` (``eigen``: ``torch.linalg.eigh``'s eigenvalues ``(n, C)`` and eigenvectors
    ``(n, C, C)``; ``out_shape``: one sample's output), squared, weighted by ``lambda_k``
    and summed within each row."""
    lambdas, vectors = eigen

    def sample_grads(x: Tensor, cotangents: Tensor) -> Weights:
        def out_of(w: Weights) -> Tensor:
            return _outputs(model, w, x.unsqueeze(0))[0]

        pullback = vjp(out_of, weights)[1]  # (output, pullback); typed as maybe a triple
        grads: Weights = vmap(lambda u: pullback(u.reshape(out_shape))[0])(cotangents)
        return grads

    # eigh gives eigenvectors as columns; cotangent k of sample n is vectors[n, :, k]
    grads = vmap(sample_grads)(inputs, vectors.transpose(1, 2))
    weight_of = lambdas.to(torch.float64)
    for key, g in grads.items():
        squares = g.detach().reshape(g.shape[0], g.shape[1], g.shape[2], -1).pow(2).sum(-1)
        rows[key] += torch.einsum("nk,nkr->r", weight_of, squares.double()).cpu()


def _hessian_gap(
    model: nn.Module,
    weights: Weights,
    batch: tuple[Tensor, Tensor],
    loss_fn: LossFn,
    seed: int,
) -> float:
    """The largest ``|v^T H v - v^T G v| / |v^T H v|`` over layers, for one Gaussian ``v``
    per layer on the first ``CHECK_SAMPLES`` samples: 0 up to rounding when each diagonal
    Hessian block is its Gauss-Newton block."""
    inputs, targets = batch[0][:CHECK_SAMPLES], batch[1][:CHECK_SAMPLES]
    generator = torch.Generator().manual_seed(seed)
    hvp = make_hvp(model, loss_fn)
    with torch.no_grad():
        outputs = _outputs(model, weights, inputs)
    h_z = _output_hessians(loss_fn, outputs, targets)
    gap = 0.0
    for key, weight in weights.items():
        v = torch.randn(weight.shape, generator=generator).to(weight)
        curvature = float((v * hvp({key: weight}, {key: v}, inputs, targets)[key]).sum())
        jv = jvp(lambda w, k=key: _outputs(model, {k: w}, inputs), (weight,), (v,))[1]
        jv = jv.reshape(jv.shape[0], -1)
        gauss_newton = float(torch.einsum("nc,ncd,nd->", jv, h_z, jv)) / inputs.shape[0]
        scale = max(abs(curvature), abs(gauss_newton), 1e-30)
        gap = max(gap, abs(curvature - gauss_newton) / scale)
    return gap


def _exact_layer(row_traces: Tensor, shape: LayerShape) -> LayerSensitivity:
    values = row_traces.numpy()
    return LayerSensitivity(
        shape=shape,
        probes=0,
        trace=float(values.sum()),
        trace_stderr=0.0,
        row_traces=values,
        row_stderr=values * 0.0,
    )


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
