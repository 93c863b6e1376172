"""Modules of the fast engine: each runs one operation of the integer model through the C++
kernels, on levels stored in their narrowest integer type (uint8, int8, int16, int32) and,
for 4-D tensors, channels-last.

:class:`FusedConv` is the fused layer of ``docs/integer.md`` (*Fused layer contract*): its
weights are packed once, here, into the kernels' 16-row blocks of 4-byte groups; signed
8-bit inputs are read as ``x + 128`` and corrected exactly in the bias.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mixq.errors import FastEngineUnavailableError
from mixq.integer.fast.build import kernels

ROW_BLOCK = 16
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT32_LIMIT = 2**31 - 1
DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
"""Level types by kernel code (0..4)."""


def level_dtype(low: int | None, high: int | None) -> torch.dtype:
    """The narrowest integer type holding every level ``low..high`` (uint8 first).

    >>> level_dtype(0, 255), level_dtype(-127, 127), level_dtype(0, 32767), level_dtype(None, None)
    (torch.uint8, torch.int8, torch.int16, torch.int64)
    """
    if low is None or high is None:
        return torch.int64
    for dtype in DTYPES:
        info = torch.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return dtype
    return torch.int64


def _code(dtype: torch.dtype) -> int:
    return DTYPES.index(dtype)


def _bounds(low: int | None, high: int | None) -> tuple[int, int]:
    return (INT64_MIN if low is None else int(low)), (INT64_MAX if high is None else int(high))


def _rounding_half(shift: Tensor) -> Tensor:
    return torch.where(shift > 0, torch.ones_like(shift) << (shift - 1).clamp_min(0), 0)


class FusedConv(nn.Module):
    """``clamp((sum_k W x + B (+ R m_res) ... ) >> c, low, high)`` as one kernel call.

    ``weight``: int levels ``[R, C/groups, KH, KW]`` (a linear layer: ``[R, K]``,
    ``conv=None``); ``multiplier``, ``shift``, ``offset``: per row (``offset`` is ``B``, in
    units of ``2^-c``); ``residual_multiplier``: set when a residual is added.
    """

    def __init__(
        self,
        weight: Tensor,
        multiplier: Tensor,
        shift: Tensor,
        offset: Tensor,
        conv: dict[str, Any] | None,
        low: int | None,
        high: int | None,
        residual_multiplier: int | None = None,
    ) -> None:
        super().__init__()
        weight = weight.to(torch.int64)
        if int(weight.min()) < -128 or int(weight.max()) > 127:
            raise FastEngineUnavailableError("the fast kernels take int8 weights only")
        self.linear = conv is None
        if self.linear:
            weight = weight.reshape(weight.shape[0], -1, 1, 1)
            conv = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
        assert conv is not None
        self.rows = int(weight.shape[0])
        self.groups = int(conv["groups"])
        self.kernel = (int(weight.shape[2]), int(weight.shape[3]))
        self.geometry = [
            *self.kernel, *conv["stride"], *conv["padding"], *conv["dilation"], self.groups,
        ]  # fmt: skip
        self.low, self.high = _bounds(low, high)
        self.out_dtype = level_dtype(low, high)
        self.has_residual = residual_multiplier is not None
        self.residual_multiplier = int(residual_multiplier or 0)
        self.second: list[int] = []  # set by also_requantize
        self._fixed = (self.rows, *self.geometry, self.low, self.high)
        self._out_code = _code(self.out_dtype)
        as_int64 = [t.to(torch.int64) for t in (multiplier, shift, offset)]
        self._pack(weight, *as_int64)

    def _pack(self, weight: Tensor, multiplier: Tensor, shift: Tensor, offset: Tensor) -> None:
        groups, rows = self.groups, self.rows
        per_group, channels = rows // groups, int(weight.shape[1])
        blocks, taps = -(-per_group // ROW_BLOCK), self.kernel[0] * self.kernel[1]
        # Columns in (kh, kw, channel) order, as the channels-last input lays them out, each
        # tap's channels padded to whole 4-byte groups.
        w = weight.reshape(groups, per_group, *weight.shape[1:]).permute(0, 1, 3, 4, 2)
        w = w.reshape(groups, per_group, taps, channels)
        k_padded = taps * (-(-channels // 4) * 4)
        padded = torch.zeros(groups, blocks * ROW_BLOCK, taps, k_padded // taps, dtype=torch.int64)
        padded[:, :per_group, :, :channels] = w
        padded = padded.reshape(groups, blocks * ROW_BLOCK, k_padded)
        w = w.reshape(groups, per_group, -1)
        packed = padded.reshape(groups, blocks, ROW_BLOCK, k_padded // 4, 4).permute(0, 1, 3, 2, 4)
        self.register_buffer("packed", packed.contiguous().to(torch.int8))
        # Every accumulator of a signed input read as x + 128 must still fit int32.
        row_abs = w.abs().sum(dim=2).reshape(rows)
        self.signed_inputs_fit = bool(int(row_abs.max()) * 255 <= _INT32_LIMIT)
        constant = offset.expand(rows) + _rounding_half(shift.expand(rows))
        correction = 128 * w.sum(dim=2).reshape(rows) * multiplier.expand(rows)

        def per_group_rows(values: Tensor) -> Tensor:
            out = torch.zeros(groups, blocks * ROW_BLOCK, dtype=torch.int64)
            out[:, :per_group] = values.expand(rows).reshape(groups, per_group)
            return out.contiguous()

        self.register_buffer("multiplier", per_group_rows(multiplier))
        self.register_buffer("shift", per_group_rows(shift))
        self.register_buffer("bias_unsigned", per_group_rows(constant))
        self.register_buffer("bias_signed", per_group_rows(constant - correction))
        # The kernel's tensors per input type, in a plain dict: nn.Module's buffer lookup
        # costs more than the kernel call at batch 1 (in-place loads keep these objects).
        common = (self.packed, self.multiplier)
        self._tensors = {
            torch.uint8: (*common, self.bias_unsigned, self.shift),
            torch.int8: (*common, self.bias_signed, self.shift),
        }

    def also_requantize(self, multiplier: int, shift: int, low: int, high: int) -> None:
        """Also return the output requantised, ``clamp((y*m + 2^(c-1)) >> c, low, high)``,
        as a second tensor (what a following :class:`FastRequantize` computes), written by
        the same epilogue instead of another pass over memory."""
        self.second = [multiplier, shift, low, high, _code(level_dtype(low, high))]

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Any:
        if self.has_residual and residual is None:
            raise ValueError("this layer adds a residual; pass its levels")
        lead = x.shape[:-1]
        if self.linear:
            x = x.reshape(-1, x.shape[-1], 1, 1)
            if residual is not None:
                residual = residual.reshape(-1, self.rows, 1, 1)
        # Everything but the tensors is fixed at lowering (batch-1 calls are overhead-bound).
        y = kernels().conv_fused(
            x, *self._tensors.get(x.dtype, self._tensors[torch.uint8]), *self._fixed,
            residual if self.has_residual else None, self.residual_multiplier,
            self._out_code, self.second,
        )  # fmt: skip
        if self.linear:
            y = [out.reshape(*lead, self.rows) for out in y]
        return y[0] if len(y) == 1 else (y[0], y[1])

    def runs(self, x: Tensor) -> bool:
        """Whether the kernel takes ``x`` (8-bit levels whose accumulators fit int32)."""
        return x.dtype == torch.uint8 or (x.dtype == torch.int8 and self.signed_inputs_fit)

    def extra_repr(self) -> str:
        kind = "linear" if self.linear else f"conv {self.kernel}, groups={self.groups}"
        residual = ", + residual" if self.has_residual else ""
        return f"{kind}, rows={self.rows}, out={self.out_dtype}{residual}"


class FastLayer(nn.Module):
    """An :class:`~mixq.integer.ops.IntegerLayer` on the fused kernel; inputs the kernel
    cannot take (levels wider than 8 bits) run on the reference layer, same integers."""

    def __init__(self, reference: Any) -> None:  # the reference engine's module
        super().__init__()
        self.fused = FusedConv(
            reference.weight, reference.multiplier, reference.shift, reference.offset,
            reference.conv, reference.low, reference.high,
            int(reference.residual_multiplier) if reference.has_residual else None,
        )  # fmt: skip
        self.reference = reference

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Any:
        if self.fused.runs(x):
            return self.fused.forward(x, residual)  # no second module call per layer
        res = residual.to(torch.int64) if residual is not None else None
        y = self.reference(x.to(torch.int64), res).to(self.fused.out_dtype)
        if y.dim() == 4:
            y = y.contiguous(memory_format=torch.channels_last)
        if not self.fused.second:
            return y
        m, c, low, high, code = self.fused.second
        return y, kernels().requantize(y, m, c, low, high, code)


class FastQuantizeInput(nn.Module):
    """The entrance quantiser, ``clamp(round(x / step), low, high)`` in float32."""

    def __init__(self, reference: Any) -> None:  # the reference engine's module
        super().__init__()
        self.step = float(reference.step)
        self.low, self.high = int(reference.low), int(reference.high)
        self.code = _code(level_dtype(self.low, self.high))

    def forward(self, x: Tensor) -> Tensor:
        return kernels().quantize_input(x, self.step, self.low, self.high, self.code)


class FastRequantize(nn.Module):
    """``clamp((x * m + 2^(c-1)) >> c, low, high)``: a tensor to a layer's input levels."""

    def __init__(self, reference: Any) -> None:  # the reference engine's module
        super().__init__()
        self.multiplier, self.shift = int(reference.multiplier), int(reference.shift)
        self.low, self.high = int(reference.low), int(reference.high)
        self.code = _code(level_dtype(self.low, self.high))

    def forward(self, x: Tensor) -> Tensor:
        return kernels().requantize(x, self.multiplier, self.shift, self.low, self.high, self.code)


class FastAddLevels(nn.Module):
    """Two levels tensors added into a third grid, ``clamp((a m_a + b m_b + h) >> c)``."""

    def __init__(self, reference: Any) -> None:  # the reference engine's module
        super().__init__()
        self.m_a, self.m_b = int(reference.m_a), int(reference.m_b)
        self.shift = int(reference.shift)
        self.low, self.high = int(reference.low), int(reference.high)
        self.code = _code(level_dtype(self.low, self.high))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return kernels().add_levels(
            a, b, self.m_a, self.m_b, self.shift, self.low, self.high, self.code
        )


class FastGlobalAvgPool(nn.Module):
    """Integer global average pooling: int64 sums, one dyadic multiply, a clamp."""

    def __init__(self, reference: Any) -> None:  # the reference engine's module
        super().__init__()
        self.multiplier, self.shift = int(reference.multiplier), int(reference.shift)
        self.keepdim = bool(reference.keepdim)
        self.low, self.high = _bounds(reference.low, reference.high)
        self.code = _code(level_dtype(reference.low, reference.high))

    def forward(self, x: Tensor) -> Tensor:
        y = kernels().global_avg_pool(
            x, self.multiplier, self.shift, self.low, self.high, self.code
        )
        return y.reshape(*y.shape, 1, 1) if self.keepdim else y


class FastMaxPool(nn.Module):
    """Max pooling of levels (padding never wins)."""

    def __init__(self, reference: Any) -> None:  # the reference engine's module
        super().__init__()
        self.kernel, self.stride = int(reference.kernel), int(reference.stride)
        self.padding = int(reference.padding)

    def forward(self, x: Tensor) -> Tensor:
        return kernels().max_pool(x, self.kernel, self.stride, self.padding)


class FastLookup(nn.Module):
    """A lookup table on levels, its output in the table's narrowest type."""

    def __init__(self, reference: Any) -> None:  # the reference engine's module
        super().__init__()
        table = reference.table
        dtype = level_dtype(int(table.min()), int(table.max()))
        self.table: Tensor
        self.register_buffer("table", table.to(dtype).clone())
        self.low = int(reference.low)

    def forward(self, x: Tensor) -> Tensor:
        return self.table[x.to(torch.int64) - self.low]
