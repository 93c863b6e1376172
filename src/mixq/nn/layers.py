"""Quantised layers: ``QuantConv2d`` (grouped, depthwise, optional folded BN) and
``QuantLinear``. Each quantises its input activation per tensor and its weight per row.

A Conv2d weight ``(out, in/groups, kh, kw)`` is seen as ``out`` rows of ``in/groups*kh*kw``
elements; a Linear weight ``(out, in)`` as ``out`` rows of ``in``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixq.assignment import RowAssignment
from mixq.errors import SchemeError, UnsupportedLayerError
from mixq.nn.act_quant import ActQuantizer, CalibrationMethod
from mixq.nn.weight_quant import RowWeightQuantizer

DEFAULT_CANDIDATE = "fixed-8"  # the rows of a layer built directly, without an assignment

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


class _RowQuantMixin:
    """What both quantised layers share: the quantisers and the row view of the weight."""

    weight: Tensor
    weight_quant: RowWeightQuantizer
    act_quant: ActQuantizer | None

    def _init_quantizers(
        self,
        assignment: RowAssignment,
        act_bits: int,
        act_signed: bool | None,
        act_method: CalibrationMethod,
    ) -> None:
        rows = self.weight.shape[0]
        # The quantisers' clips and row codes live where the weight does (a layer built
        # from a CUDA layer is on CUDA whole); they keep their float32 dtype.
        device = self.weight.device
        self.weight_quant = RowWeightQuantizer(assignment, self.weight[0].numel()).to(device)
        # act_bits == 0 leaves the layer's input in float.
        self.act_quant = (
            ActQuantizer(act_bits, act_signed, act_method).to(device) if act_bits else None
        )
        if assignment.rows != rows:
            raise SchemeError(f"assignment has {assignment.rows} rows, weight has {rows}")

    @property
    def assignment(self) -> RowAssignment:
        return self.weight_quant.assignment

    def effective_weight_bias(self) -> tuple[Tensor, Tensor | None]:
        """The weight and bias the quantiser sees (BN folded in, where there is one)."""
        return self.weight, getattr(self, "bias", None)

    def weight_rows(self) -> Tensor:
        """The effective weight as ``(rows, elements)``."""
        weight, _ = self.effective_weight_bias()
        return weight.reshape(weight.shape[0], -1)

    def quantized_weight(self) -> Tensor:
        """The fake-quantised effective weight, in the layer's weight shape."""
        weight, _ = self.effective_weight_bias()
        return self.weight_quant(weight.reshape(weight.shape[0], -1)).reshape(weight.shape)

    @torch.no_grad()
    def set_effective_weight(self, w_rows: Tensor) -> None:
        """Make the effective weight (BN folded in) equal ``w_rows`` (rows, elements)."""
        self.weight.copy_(self._unfold_gain(w_rows).reshape(self.weight.shape))

    def _unfold_gain(self, w_rows: Tensor) -> Tensor:
        return w_rows

    def _quantize_input(self, x: Tensor) -> Tensor:
        return self.act_quant(x) if self.act_quant is not None else x


class QuantConv2d(_RowQuantMixin, nn.Conv2d):
    """A Conv2d with row-wise quantised weights, a quantised input and optionally a folded BN.

    With a BN, the weight that is quantised is ``W * gamma / sqrt(var + eps)`` and the bias
    ``beta + (b - mean) * gamma / sqrt(var + eps)``, exactly what the integer engine runs.
    While ``bn_frozen`` (the default) the running statistics are used in training too, so
    training costs a single convolution; unfrozen, a no-grad float convolution first
    measures the batch statistics and updates the running ones (Jacob et al., 2018).
    """

    bn: nn.BatchNorm2d | None
    bn_frozen: bool
    folded_bn_name: str | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: PaddingMode = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        assignment: RowAssignment | None = None,
        act_bits: int = 8,
        act_signed: bool | None = None,
        act_method: CalibrationMethod = "mse",
    ) -> None:
        """Built directly, every row is Fixed-8 unless ``assignment`` says otherwise; the
        input quantiser needs :func:`mixq.calibrate` before evaluation, as after
        :func:`mixq.quantize`."""
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self.bn = None
        self.bn_frozen = True
        self.folded_bn_name = None
        assignment = assignment or RowAssignment.uniform(DEFAULT_CANDIDATE, out_channels)
        self._init_quantizers(assignment, act_bits, act_signed, act_method)

    @classmethod
    def from_float(
        cls,
        conv: nn.Conv2d,
        assignment: RowAssignment,
        *,
        bn: nn.BatchNorm2d | None = None,
        act_bits: int = 8,
        act_signed: bool | None = None,
        act_method: CalibrationMethod = "mse",
    ) -> QuantConv2d:
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            _pair(conv.kernel_size),
            stride=_pair(conv.stride),
            padding=conv.padding if isinstance(conv.padding, str) else _pair(conv.padding),
            dilation=_pair(conv.dilation),
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            assignment=assignment,
            act_bits=act_bits,
            act_signed=act_signed,
            act_method=act_method,
        )
        _take_parameters(layer, conv)
        layer.bn = bn
        return layer

    def effective_weight_bias(self) -> tuple[Tensor, Tensor | None]:
        if self.bn is None:
            return self.weight, self.bias
        return self._fold(*self._running_statistics())

    def _running_statistics(self) -> tuple[Tensor, Tensor]:
        assert self.bn is not None
        mean, var = self.bn.running_mean, self.bn.running_var
        if mean is None or var is None:
            raise UnsupportedLayerError(
                "the folded BatchNorm2d tracks no running statistics (track_running_stats=False)"
            )
        return mean, var

    def _bn_gain(self, mean: Tensor, var: Tensor) -> Tensor:
        assert self.bn is not None
        gamma = self.bn.weight if self.bn.affine else torch.ones_like(mean)
        return gamma / torch.sqrt(var + self.bn.eps)  # (out,)

    def _unfold_gain(self, w_rows: Tensor) -> Tensor:
        if self.bn is None:
            return w_rows
        gain = self._bn_gain(*self._running_statistics()).unsqueeze(1)
        # A row whose BN gain is zero contributes nothing whatever its weight.
        safe = torch.where(gain.abs() > 1e-12, gain, torch.ones_like(gain))
        return torch.where(gain.abs() > 1e-12, w_rows / safe, torch.zeros_like(w_rows))

    def _fold(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        assert self.bn is not None
        beta = self.bn.bias if self.bn.affine else torch.zeros_like(mean)
        gain = self._bn_gain(mean, var)
        bias = self.bias if self.bias is not None else torch.zeros_like(mean)
        return self.weight * gain.view(-1, 1, 1, 1), beta + (bias - mean) * gain

    def forward(self, x: Tensor) -> Tensor:
        x = self._quantize_input(x)
        bias: Tensor | None
        if self.bn is not None and self.training and not self.bn_frozen:
            weight, bias = self._fold(*self._batch_statistics(x))
        else:
            weight, bias = self.effective_weight_bias()
        weight_q = self.weight_quant(weight.reshape(weight.shape[0], -1)).reshape(weight.shape)
        return self._conv_forward(x, weight_q, bias)

    @torch.no_grad()
    def _batch_statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        assert self.bn is not None
        y = self._conv_forward(x, self.weight, self.bias)
        mean = y.mean(dim=(0, 2, 3))
        var = y.var(dim=(0, 2, 3), unbiased=False)
        count = y.numel() / y.shape[1]
        momentum = self.bn.momentum if self.bn.momentum is not None else 0.1
        running_mean, running_var = self._running_statistics()
        running_mean.lerp_(mean, momentum)
        running_var.lerp_(var * count / max(count - 1, 1), momentum)
        if self.bn.num_batches_tracked is not None:
            self.bn.num_batches_tracked.add_(1)
        return mean, var


class QuantLinear(_RowQuantMixin, nn.Linear):
    """A Linear layer with row-wise quantised weights and a quantised input."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        assignment: RowAssignment | None = None,
        act_bits: int = 8,
        act_signed: bool | None = None,
        act_method: CalibrationMethod = "mse",
    ) -> None:
        """Built directly, every row is Fixed-8 unless ``assignment`` says otherwise.

        >>> import torch, mixq
        >>> layer = mixq.QuantLinear(4, 2)
        >>> mixq.calibrate(layer, [torch.randn(8, 4)], progress=False)
        1
        >>> layer(torch.randn(3, 4)).shape
        torch.Size([3, 2])
        """
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        assignment = assignment or RowAssignment.uniform(DEFAULT_CANDIDATE, out_features)
        self._init_quantizers(assignment, act_bits, act_signed, act_method)

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        assignment: RowAssignment,
        *,
        act_bits: int = 8,
        act_signed: bool | None = None,
        act_method: CalibrationMethod = "mse",
    ) -> QuantLinear:
        layer = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
            assignment=assignment,
            act_bits=act_bits,
            act_signed=act_signed,
            act_method=act_method,
        )
        _take_parameters(layer, linear)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self._quantize_input(x), self.quantized_weight(), self.bias)


def _take_parameters(layer: nn.Conv2d | nn.Linear, source: nn.Conv2d | nn.Linear) -> None:
    """Copy ``source``'s weight and bias into ``layer`` (built with a bias exactly when
    ``source`` has one) and its training mode."""
    with torch.no_grad():
        layer.weight.copy_(source.weight)
        if isinstance(layer.bias, Tensor) and source.bias is not None:
            layer.bias.copy_(source.bias)
    layer.train(source.training)


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d size attribute (always two entries) as the pair its constructor takes."""
    height, width = values
    return height, width


QUANT_LAYERS = (QuantConv2d, QuantLinear)
QuantLayer = QuantConv2d | QuantLinear
