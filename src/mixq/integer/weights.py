"""A quantised layer's weight as integers: ``w_q[r] = step[r] * values[r]``, exactly.

Each row's integers are ``sign * integer magnitude`` on its candidate's grid
(:func:`mixq.grids.integer_magnitudes`), and its step is ``alpha_r / denominator``. PoT
integers have one set bit and SP2 integers at most two, which is what lets the engine run
those rows as one shift, or two shifts and an add.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mixq.errors import IntegerConversionError, SchemeError, UnsupportedLayerError
from mixq.fakequant import MIN_SCALE, round_to_grid
from mixq.grids import integer_magnitudes
from mixq.nn.layers import QUANT_LAYERS
from mixq.schemes import Candidate, Scheme

_MAX_DENOMINATOR = 2**30

# Set bits of an integer magnitude that each scheme's hardware adds up.
_MAX_TERMS = {Scheme.POT: 1, Scheme.SP2: 2}


@dataclass(frozen=True)
class IntegerWeights:
    """Integer weights of one layer, with the per-row step that makes them real again."""

    values: Tensor  # int64, the layer's weight shape
    step: np.ndarray  # float64 per row: alpha_r / denominator of the row's grid
    codes: np.ndarray  # int64 per row: index into candidates
    candidates: tuple[Candidate, ...]

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    def row_bound(self) -> np.ndarray:
        """``sum_j |w_rj|`` per row: with inputs of magnitude at most ``q``, the accumulator
        of row ``r`` is at most ``q * row_bound[r]`` in magnitude."""
        return self.values.reshape(self.rows, -1).abs().sum(dim=1).numpy()

    def dequantize(self) -> Tensor:
        """The real weights, float64: equal to the fake-quantised ones up to float32 rounding."""
        step = torch.from_numpy(self.step).view(-1, *([1] * (self.values.dim() - 1)))
        return self.values.double() * step


def integer_weights(layer: torch.nn.Module) -> IntegerWeights:
    """Read a ``QuantConv2d``/``QuantLinear``'s effective (BN-folded) weight as integers.

    The rounding repeats :func:`mixq.fakequant.fake_quant_rows` operation for operation in
    float32, so every integer is the level the fake-quantised model uses.
    """
    if not isinstance(layer, QUANT_LAYERS):
        raise UnsupportedLayerError(f"{type(layer).__name__} is not a QuantConv2d or QuantLinear")
    quantizer = layer.weight_quant
    if not quantizer.enabled:
        raise UnsupportedLayerError("weight quantisation is switched off; switch it on first")
    with torch.no_grad():
        weight, _ = layer.effective_weight_bias()
        # Read on the CPU whatever the layer's device: the integers are kept as numpy-backed
        # CPU tensors (float32 division and rounding give the same values on any device).
        w_rows = weight.detach().float().reshape(weight.shape[0], -1).cpu()
        if not torch.isfinite(w_rows).all():
            raise SchemeError("weights contain NaN or Inf")
        alpha = quantizer.alpha.detach().float().cpu()
        codes = quantizer.row_codes.cpu().numpy().astype(np.int64)
        values = torch.zeros(w_rows.shape, dtype=torch.int64)
        step = np.zeros(w_rows.shape[0], dtype=np.float64)
        for code, candidate in enumerate(quantizer.candidates):
            rows = torch.from_numpy(np.flatnonzero(codes == code))
            if rows.numel() == 0:
                continue
            scale = alpha[rows].clamp_min(MIN_SCALE).unsqueeze(1)
            levels = round_to_grid((w_rows[rows] / scale).clamp(-1.0, 1.0), candidate)
            _, denominator = integer_magnitudes(candidate)
            if denominator > _MAX_DENOMINATOR:
                raise IntegerConversionError(
                    f"{candidate}: its finest level is 1/{denominator} of the clip, so its "
                    "integers do not fit 31 bits; use fewer PoT bits for integer inference"
                )
            values[rows] = torch.round(levels.double() * denominator).to(torch.int64)
            step[rows.numpy()] = scale.squeeze(1).double().numpy() / denominator
    _check_terms(values, codes, quantizer.candidates)
    return IntegerWeights(values.reshape(weight.shape), step, codes, quantizer.candidates)


def _check_terms(values: Tensor, codes: np.ndarray, candidates: tuple[Candidate, ...]) -> None:
    for code, candidate in enumerate(candidates):
        limit = _MAX_TERMS.get(candidate.scheme)
        rows = torch.from_numpy(np.flatnonzero(codes == code))
        if limit is None or rows.numel() == 0:
            continue
        magnitudes = values[rows].abs()
        if int(popcount(magnitudes).max()) > limit:
            raise SchemeError(f"{candidate} integers with more than {limit} set bits")


def popcount(values: Tensor) -> Tensor:
    """Set bits of each non-negative integer."""
    count = torch.zeros_like(values)
    remaining = values.clone()
    while bool((remaining > 0).any()):
        count += remaining & 1
        remaining = remaining >> 1
    return count


def shift_add_terms(values: Tensor) -> list[tuple[int, Tensor]]:
    """Split integers into ``sum_k (t_k << k)`` with ternary ``t_k`` in {-1, 0, 1}.

    A PoT weight has one term (a shift), an SP2 weight two (two shifts and an add); a
    convolution with a ternary ``t_k`` needs only additions and subtractions.

    >>> terms = shift_add_terms(torch.tensor([[5, -4, 0, 6]]))
    >>> [(k, t.tolist()) for k, t in terms]
    [(0, [[1, 0, 0, 0]]), (1, [[0, 0, 0, 1]]), (2, [[1, -1, 0, 1]])]
    """
    sign = torch.sign(values)
    magnitude = values.abs()
    terms: list[tuple[int, Tensor]] = []
    bit = 0
    while bool((magnitude >> bit).any()):
        mask = (magnitude >> bit) & 1
        if bool(mask.any()):
            terms.append((bit, sign * mask))
        bit += 1
    return terms
