"""Second moments ``E[x x^T]`` of a layer's input, as GPTQ's error feedback weighs them.

The input is taken as the layer sees it (after its activation quantiser), in the columns
its weight rows multiply: ``Cin*kh*kw`` unfolded patches for a convolution, the last axis
for a linear layer (any leading axes, such as a sentence's tokens, are samples). Under
``torch.distributed`` the sums and counts of every rank are added before use, so N
processes on N shares of the data get the moments of the whole data.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from mixq.errors import CalibrationError
from mixq.nn.layers import QUANT_LAYERS, QuantConv2d

# The dtype of each batch's product x^T x; the running sum over batches is float64 either
# way. Chosen by measurement (benchmarks/ptq_scaling.py, its "precision" rows).
MOMENT_DTYPE = torch.float64


def supports_error_feedback(layer: nn.Module) -> bool:
    """Grouped convolutions have one input matrix per group, and ``padding="same"`` has no
    unfolded patches to weigh (``F.unfold`` takes numbers only); they keep nearest rounding."""
    if isinstance(layer, QuantConv2d):
        return (
            layer.groups == 1
            and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str)
        )
    return True


def input_columns(layer: nn.Module, x: Tensor) -> Tensor:
    """The layer's input as ``(samples, columns)``, the columns of its weight rows."""
    if isinstance(layer, QuantConv2d):
        if isinstance(layer.padding, str):
            raise CalibrationError(
                f"padding={layer.padding!r} has no unfolded input for error-feedback rounding"
            )
        patches = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])  # (B*L, Cin*kh*kw)
    return x.reshape(-1, x.shape[-1])


class SecondMoment:
    """Accumulates the sum of ``x x^T`` over a layer's (quantised) inputs, and their count.

    ``dtype`` is the precision of each batch's product; the sum over batches is float64.
    """

    def __init__(self, dtype: torch.dtype = MOMENT_DTYPE) -> None:
        self.dtype = dtype
        self.sum: Tensor | None = None
        self.count = 0

    def add(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not isinstance(module, QUANT_LAYERS):
            raise CalibrationError(
                f"second moments are of quantised layers' inputs, not a {type(module).__name__}"
            )
        x = args[0].detach()
        if module.act_quant is not None:
            x = module.act_quant(x)
        cols = input_columns(module, x).to(self.dtype)
        outer = (cols.T @ cols).double()
        self.sum = outer if self.sum is None else self.sum + outer
        self.count += cols.shape[0]

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.add(module, args)

    def all_reduce(self) -> None:
        """Add every rank's sum and count (a no-op outside ``torch.distributed``)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        if self.sum is None:
            raise CalibrationError("a rank saw no input for a layer; give every rank batches")
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.sum.device)
        dist.all_reduce(self.sum)
        dist.all_reduce(count)
        self.count = int(count.item())

    def release(self) -> None:
        """Drop the sum (its memory) and the count, as before any input."""
        self.sum, self.count = None, 0

    @property
    def matrix(self) -> Tensor:
        if self.sum is None or self.count == 0:
            raise CalibrationError("layer saw no input during error-feedback rounding")
        return self.sum / self.count
