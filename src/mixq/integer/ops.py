"""The integer model's operations. Every tensor between them is int64 holding one
quantiser's levels (the network's output: int32-range integers); the only float operations
are the entrance (:class:`QuantizeInput`) and the exit
(:meth:`mixq.integer.IntegerModel.forward` multiplies the output integers by their scale).

Each quantised layer is one fused :class:`IntegerLayer`: accumulate, requantise with the
folded bias and an optional residual, clamp to the next quantiser's range.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixq.integer.dyadic import dyadic_multiply, rounding_half, rounding_shift
from mixq.integer.weights import IntegerWeights, shift_add_terms
from mixq.schemes import Scheme

Engine = Literal["reference", "int8", "fast"]
"""``reference``: exact float64/int64 kernels; ``int8``: oneDNN's int8 GEMM; ``fast``: the
fused C++ kernels of :mod:`mixq.integer.fast` (the same integers)."""
ENGINES: tuple[Engine, ...] = ("reference", "int8", "fast")


def layer_engine(
    values: Tensor, conv: dict[str, Any] | None, low: int, high: int, engine: Engine
) -> tuple[Engine, int]:
    """The engine a layer runs on and the int8 input offset: unsigned 8-bit inputs shift by
    128 into int8; wide integers and grouped convs stay on the reference engine (what the
    int8 GEMM cannot run)."""
    offset = 128 if high > 127 else 0
    fits = int(values.abs().max()) <= 127 and low - offset >= -128 and high - offset <= 127
    grouped = conv is not None and conv["groups"] > 1
    return (engine if fits and not grouped else "reference"), offset


_FLOAT32_EXACT = 2**24  # every integer of magnitude up to this is a float32


def _buffer(values: np.ndarray | Tensor) -> Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.int64).clone()


class QuantizeInput(nn.Module):
    """The entrance: ``clamp(round(x / step), low, high)``, as the fake quantiser computes it."""

    step: Tensor

    def __init__(self, step: Tensor, low: int, high: int) -> None:
        super().__init__()
        self.register_buffer("step", step.detach().float().reshape(()).clone())
        self.low, self.high = low, high

    def forward(self, x: Tensor) -> Tensor:
        v = (x.float() / self.step).clamp(float(self.low), float(self.high))
        return torch.round(v).to(torch.int64)

    def extra_repr(self) -> str:
        return f"step={float(self.step):.6g}, range=[{self.low}, {self.high}]"


class Requantize(nn.Module):
    """``clamp(round(x * m / 2^c), low, high)``: an int tensor to a layer's input levels."""

    multiplier: Tensor
    shift: Tensor

    def __init__(self, multiplier: int, shift: int, low: int, high: int) -> None:
        super().__init__()
        self.register_buffer("multiplier", torch.tensor(int(multiplier)))
        self.register_buffer("shift", torch.tensor(int(shift)))
        self.low, self.high = low, high

    def forward(self, x: Tensor) -> Tensor:
        return dyadic_multiply(x, self.multiplier, self.shift).clamp(self.low, self.high)

    def extra_repr(self) -> str:
        return f"m={int(self.multiplier)}, c={int(self.shift)}, range=[{self.low}, {self.high}]"


class Rescale(nn.Module):
    """``round(x * m / 2^c)``: moves an int tensor to another scale (a residual branch)."""

    multiplier: Tensor
    shift: Tensor

    def __init__(self, multiplier: int, shift: int) -> None:
        super().__init__()
        self.register_buffer("multiplier", torch.tensor(int(multiplier)))
        self.register_buffer("shift", torch.tensor(int(shift)))

    def forward(self, x: Tensor) -> Tensor:
        return dyadic_multiply(x, self.multiplier, self.shift)


class GlobalAvgPool(nn.Module):
    """Sum over the spatial positions, then one dyadic multiply for ``1/N`` and the rescale
    to the next quantiser's levels, clamped to its range (``low=None``: no clamp)."""

    multiplier: Tensor
    shift: Tensor

    def __init__(
        self,
        multiplier: int,
        shift: int,
        keepdim: bool = True,
        low: int | None = None,
        high: int | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("multiplier", torch.tensor(int(multiplier)))
        self.register_buffer("shift", torch.tensor(int(shift)))
        self.keepdim = keepdim
        self.low, self.high = low, high

    def forward(self, x: Tensor) -> Tensor:
        total = x.sum(dim=(-2, -1), keepdim=self.keepdim)
        y = dyadic_multiply(total, self.multiplier, self.shift)
        return y.clamp(self.low, self.high) if self.low is not None else y


class MaxPool(nn.Module):
    """Max pooling on integer levels (the order of values needs no scale); padding holds the
    lowest int64, which no window's maximum can be, as PyTorch pads with ``-inf``."""

    def __init__(self, kernel: int, stride: int, padding: int = 0) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x: Tensor) -> Tensor:
        if self.padding:
            p = self.padding
            x = F.pad(x, (p, p, p, p), value=torch.iinfo(torch.int64).min)
        windows = x.unfold(2, self.kernel, self.stride).unfold(3, self.kernel, self.stride)
        return windows.amax(dim=(-2, -1))


class AddLevels(nn.Module):
    """Two quantisers' levels added into a third's: ``clamp((a*m_a + b*m_b + 2^(c-1)) >> c,
    low, high)`` (a residual addition neither of whose inputs comes straight from a layer)."""

    m_a: Tensor
    m_b: Tensor
    shift: Tensor

    def __init__(self, m_a: int, m_b: int, shift: int, low: int, high: int) -> None:
        super().__init__()
        self.register_buffer("m_a", torch.tensor(int(m_a)))
        self.register_buffer("m_b", torch.tensor(int(m_b)))
        self.register_buffer("shift", torch.tensor(int(shift)))
        self.low, self.high = low, high

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return rounding_shift(a * self.m_a + b * self.m_b, self.shift).clamp(self.low, self.high)

    def extra_repr(self) -> str:
        return f"m=({int(self.m_a)}, {int(self.m_b)}), c={int(self.shift)}"


class Lookup(nn.Module):
    """An elementwise function on levels ``low..low+len(table)-1`` as a table of the next
    quantiser's levels (how integer runtimes run Hardswish, SiLU and Sigmoid)."""

    table: Tensor

    def __init__(self, table: Tensor, low: int, function: str) -> None:
        super().__init__()
        self.register_buffer("table", table.to(torch.int64).clone())
        self.low = low
        self.function = function

    def forward(self, x: Tensor) -> Tensor:
        return self.table[x - self.low]

    def extra_repr(self) -> str:
        return f"{self.function}, inputs {self.low}..{self.low + self.table.numel() - 1}"


class IntegerLayer(nn.Module):
    """A quantised conv or linear as one fused integer operation (``docs/integer.md``,
    *Fused layer contract*)::

        acc = sum_k W[r, k] * X[n, k, p]                       (exact; fits int32)
        t   = acc * M[r] + B[r]  (+ R[n, r, p] * M_res)         (int64)
        y   = clamp((t + 2^(c[r] - 1)) >> c[r], low, high)

    ``X`` are the input quantiser's levels, ``R`` (the second input, when
    ``residual_multiplier`` is set) another quantiser's levels, ``low``/``high`` the next
    quantiser's range (``None``: no clamp). Rows of every scheme hold integer levels over
    their common denominator; ``groups`` lists them per scheme with their shift-add terms
    (what PoT/SP2 hardware adds up; :meth:`accumulate_shift_add` runs that way).
    """

    multiplier: Tensor
    shift: Tensor
    offset: Tensor
    weight: Tensor
    residual_multiplier: Tensor

    def __init__(
        self,
        weights: IntegerWeights,
        conv: dict[str, Any] | None,
        multiplier: np.ndarray,
        shift: np.ndarray,
        offset: np.ndarray,
        engine: Engine = "reference",
        input_offset: int = 0,
        *,
        low: int | None = None,
        high: int | None = None,
        residual_multiplier: int | None = None,
    ) -> None:
        super().__init__()
        self.conv = conv  # stride, padding, dilation, groups; None for a linear layer
        self.engine = engine
        self.low, self.high = low, high
        self.register_buffer("multiplier", _buffer(multiplier))
        self.register_buffer("shift", _buffer(shift))
        self.register_buffer("offset", _buffer(offset))
        self.register_buffer("weight", weights.values.clone())
        residual = 0 if residual_multiplier is None else int(residual_multiplier)
        self.has_residual = residual_multiplier is not None
        self.register_buffer("residual_multiplier", torch.tensor(residual, dtype=torch.int64))
        self.schemes = [str(c) for c in weights.candidates]  # row codes index this list
        self._rounding_constant = self.offset + rounding_half(self.shift)
        self._float_weight = self.weight.double()
        self._single_weight = self.weight.float()
        self._row_bound = int(self.weight.reshape(self.weight.shape[0], -1).abs().sum(1).max())
        self._build_groups(weights)
        self.input_offset = 0
        if engine == "int8":
            self._build_int8(input_offset)

    def _build_groups(self, weights: IntegerWeights) -> None:
        self.groups: list[tuple[str, Tensor, list[tuple[int, Tensor]]]] = []
        for code, candidate in enumerate(weights.candidates):
            rows = torch.from_numpy(np.flatnonzero(weights.codes == code))
            if rows.numel() == 0:
                continue
            values = weights.values[rows]
            terms = [(0, values)] if candidate.scheme is Scheme.FIXED else shift_add_terms(values)
            self.groups.append((str(candidate), rows, terms))

    def _build_int8(self, input_offset: int) -> None:
        rows = self.weight.reshape(self.weight.shape[0], -1)
        self.input_offset = input_offset
        # Columns come in (kh, kw, channel) order from the channels-last im2col.
        gemm_rows = self.weight.permute(0, 2, 3, 1) if self.conv is not None else self.weight
        self.int8_weight = gemm_rows.reshape(rows.shape[0], -1).t().contiguous().to(torch.int8)
        # (x - o) . w + o * sum(w) = x . w: inputs shifted into int8, corrected exactly.
        self.int8_correction = input_offset * rows.sum(dim=1)
        self._int8_constant = self._rounding_constant + self.int8_correction * self.multiplier

    def accumulate(self, q: Tensor) -> Tensor:
        """Integer accumulators ``sum_j q_j * w_rj`` (int64; each fits int32)."""
        if self.engine == "int8":
            return self._int8_products(q) + _per_channel(self.int8_correction, q, self._channel)
        # One float convolution for every row: products and partial sums are integers
        # bounded by max|q| * sum_j |w_rj|, so float64 (below 2^53; the bound is checked
        # below 2^31 at conversion) or, where the bound is below 2^24, float32 holds every
        # one exactly, in any summation order (direct convolution and GEMM; no Winograd).
        bound = int(q.abs().max()) * self._row_bound if q.numel() else 0
        dtype = torch.float32 if bound < _FLOAT32_EXACT else torch.float64
        weight = self._float_weight if dtype == torch.float64 else self._single_weight
        return self._convolve(q.to(dtype), weight).to(torch.int64)

    def accumulate_shift_add(self, q: Tensor) -> Tensor:
        """The same accumulators as PoT/SP2 hardware forms them: per scheme, a ternary
        convolution per set bit (additions only), shifted and added."""
        out = torch.zeros_like(self.accumulate(q))
        for _, rows, terms in self.groups:
            acc: Tensor | int = 0
            for bit, values in terms:
                weight = torch.zeros_like(self._float_weight)
                weight[rows] = values.double()
                acc = acc + (self._convolve(q.double(), weight).to(torch.int64) << bit)
            out = out + acc
        return out

    def _convolve(self, q: Tensor, values: Tensor) -> Tensor:
        if self.conv is None:
            return q @ values.t()
        return F.conv2d(q, values, **self.conv)

    def _int8_products(self, q: Tensor) -> Tensor:
        """``sum_j (q_j - offset) * w_rj`` through the int8 GEMM (int64 out)."""
        shifted = q - self.input_offset
        if self.conv is None:
            lead = shifted.shape[:-1]
            flat = shifted.reshape(-1, shifted.shape[-1]).to(torch.int8)
            return torch._int_mm(flat, self.int8_weight).to(torch.int64).reshape(*lead, -1)
        cols, (n, h, w) = _im2col(shifted, self.weight.shape, self.conv, self.input_offset)
        acc = torch._int_mm(cols, self.int8_weight).to(torch.int64)
        return acc.reshape(n, h, w, -1).permute(0, 3, 1, 2)

    @property
    def _channel(self) -> int:
        return 1 if self.conv is not None else -1

    _DERIVED = ("_rounding_constant", "_float_weight", "_single_weight")
    _DERIVED_INT8 = ("int8_weight", "int8_correction", "_int8_constant")

    def _apply(self, fn: Any, recurse: bool = True) -> IntegerLayer:
        # The tensors derived from the buffers at construction are plain attributes, which
        # nn.Module's .to()/.cuda() do not visit: they follow the buffers' device here, and
        # keep their dtypes (a .half() of the model must not round integer arithmetic).
        super()._apply(fn, recurse)
        device = self.weight.device
        names = self._DERIVED + (self._DERIVED_INT8 if self.engine == "int8" else ())
        for name in names:
            setattr(self, name, getattr(self, name).to(device))
        self.groups = [
            (name, rows.to(device), [(bit, values.to(device)) for bit, values in terms])
            for name, rows, terms in self.groups
        ]
        return self

    def forward(self, q: Tensor, residual: Tensor | None = None) -> Tensor:
        # (acc * m + offset + 2^(c-1)) >> c, with the constant terms (rounding half, the
        # int8 input-offset correction) added once, ahead.
        if self.engine == "int8":
            acc, constant = self._int8_products(q), self._int8_constant
        else:
            acc, constant = self.accumulate(q), self._rounding_constant
        dim = self._channel
        t = acc * _per_channel(self.multiplier, acc, dim) + _per_channel(constant, acc, dim)
        if self.has_residual:
            if residual is None:
                raise ValueError("this layer adds a residual; pass its levels")
            t = t + residual * self.residual_multiplier
        y = t >> _per_channel(self.shift, acc, dim)
        return y.clamp(self.low, self.high) if self.low is not None else y

    def extra_repr(self) -> str:
        kind = "conv" if self.conv is not None else "linear"
        groups = ", ".join(f"{name}: {rows.numel()}" for name, rows, _ in self.groups)
        residual = ", + residual" if self.has_residual else ""
        return f"{kind}, engine={self.engine}, {groups}, range=[{self.low}, {self.high}]{residual}"


def _im2col(
    shifted: Tensor, weight_shape: torch.Size, conv: dict[str, Any], offset: int
) -> tuple[Tensor, tuple[int, int, int]]:
    # An integer im2col (PyTorch's own has no integer kernel and is far slower): strided
    # windows of the padded int8 tensor in channels-last order, so the one copy moves whole
    # channel vectors. Padding holds the shifted zero, -offset. Columns are ordered
    # (kh, kw, channel), as the int8 weight is.
    kh, kw = weight_shape[-2:]
    pad_h, pad_w = conv["padding"]
    (stride_h, stride_w), (dil_h, dil_w) = conv["stride"], conv["dilation"]
    x = shifted.permute(0, 2, 3, 1).to(torch.int8)  # NHWC; free when q is channels-last
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, pad_w, pad_w, pad_h, pad_h), value=-offset)
    n, c = x.shape[0], x.shape[3]
    h_out = _out_size(shifted.shape[2], kh, conv, 0)
    w_out = _out_size(shifted.shape[3], kw, conv, 1)
    span_h, span_w = dil_h * (kh - 1) + 1, dil_w * (kw - 1) + 1
    windows = x.unfold(1, span_h, stride_h).unfold(2, span_w, stride_w)
    windows = windows[..., ::dil_h, ::dil_w]  # (n, h_out, w_out, c, kh, kw)
    cols = windows.permute(0, 1, 2, 4, 5, 3).reshape(n * h_out * w_out, kh * kw * c)
    return cols, (n, h_out, w_out)


def _out_size(size: int, kernel: int, conv: dict[str, Any], axis: int) -> int:
    pad, dil, stride = conv["padding"][axis], conv["dilation"][axis], conv["stride"][axis]
    return (size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1


def _per_channel(values: Tensor, like: Tensor, dim: int) -> Tensor:
    if values.dim() == 0 or values.numel() == 1:
        return values.reshape(())
    shape = [1] * like.dim()
    shape[dim] = -1
    return values.view(shape)
