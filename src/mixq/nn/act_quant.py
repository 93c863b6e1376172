"""Per-tensor activation quantiser with a learnable clip (PACT/LSQ), calibrated from data."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from mixq.clip_screen import (
    SortedMagnitudes,
    contenders,
    estimated_errors,
    float32_error_bound,
)
from mixq.errors import CalibrationError, SchemeError
from mixq.fakequant import MIN_SCALE, quantize_uniform, scale_gradient

CalibrationMethod = Literal["mse", "percentile"]

ACT_BITS_RANGE = (2, 16)
_SAMPLES_PER_BATCH = 1 << 16  # values kept per batch while calibrating
MAX_SAMPLES = 1 << 21  # bounds memory and the MSE search on long calibrations
_PERCENTILE = 0.9999
_MSE_STEPS = 64
_SCREEN_MAX_MAGNITUDE = 1e15  # squared errors stay far from float32 overflow


class ActQuantizer(nn.Module):
    """Quantises a tensor to ``bits`` with clip level ``alpha``: unsigned after a ReLU, else
    signed. ``signed=None`` decides from the calibration data (any negative value: signed).

    >>> q = ActQuantizer(bits=4)
    >>> q.start_calibration()
    >>> _ = q(torch.linspace(0, 3, 1000))
    >>> q.finish_calibration()
    >>> q.signed, 2.0 < float(q.alpha.detach()) <= 3.0
    (False, True)
    """

    calibrated: Tensor

    def __init__(
        self, bits: int, signed: bool | None = None, method: CalibrationMethod = "mse"
    ) -> None:
        super().__init__()
        low, high = ACT_BITS_RANGE
        if isinstance(bits, bool) or not isinstance(bits, int) or not low <= bits <= high:
            raise SchemeError(f"activation bits must be an integer in {low}..{high}, got {bits!r}")
        if method not in ("mse", "percentile"):
            raise CalibrationError(f"unknown calibration method {method!r}; use mse or percentile")
        self.bits = bits
        self.signed = signed
        self.method: CalibrationMethod = method
        self.enabled = True
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("calibrated", torch.tensor(False))
        self._samples: list[Tensor] | None = None
        self._min = float("inf")
        self._sizes: list[int] = []  # values per observed batch, in order
        self._counting = False

    @property
    def levels(self) -> int:
        """Non-zero levels on one side of zero (LSQ's ``Q_p``)."""
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def step(self) -> Tensor:
        """The quantisation step (the integer engine's activation scale)."""
        return self.alpha.detach().clamp_min(MIN_SCALE) / self.levels

    def start_calibration(self, *, counting: bool = False) -> None:
        """Observe what :meth:`forward` sees from now on; ``counting``: only how many
        values each batch holds (:attr:`observed_sizes`), keeping no sample."""
        self._samples = []
        self._min = float("inf")
        self._sizes = []
        self._counting = counting
        self._generator = torch.Generator().manual_seed(0)

    @property
    def observed_sizes(self) -> list[int]:
        """Values in each non-empty batch observed since the start of calibration."""
        return list(self._sizes)

    def skip_draws(self, sizes: list[int]) -> None:
        """Advance the subsampling generator as observing batches of ``sizes`` values would,
        so that this process subsamples its batches as one process would after those."""
        for size in sizes:
            if size > _SAMPLES_PER_BATCH:
                torch.randint(size, (_SAMPLES_PER_BATCH,), generator=self._generator)

    def observations(self) -> tuple[Tensor, float]:
        """The values kept so far (empty if none) and the least value seen."""
        kept = torch.cat(self._samples) if self._samples else torch.empty(0)
        return kept, self._min

    def set_observations(self, sample: Tensor, minimum: float) -> None:
        """Replace what was observed (the union of several processes' observations)."""
        self._samples = [sample] if sample.numel() else []
        self._min = minimum

    def forward(self, x: Tensor) -> Tensor:
        if self._samples is not None:
            self._observe(x)
            return x
        if not self.enabled:
            return x
        if not bool(self.calibrated):
            raise CalibrationError(
                "activation quantiser is not calibrated: pass calibration data to "
                "mixq.quantize or call mixq.calibrate(model, data)"
            )
        factor = 1.0 / (max(x[0].numel(), 1) * self.levels) ** 0.5
        return quantize_uniform(
            x, scale_gradient(self.alpha, factor), self.bits, signed=bool(self.signed)
        )

    def _observe(self, x: Tensor) -> None:
        if self._counting:
            if x.numel():
                self._sizes.append(x.numel())
            return
        # Observations are kept, and subsampled by a CPU generator, on the CPU whatever the
        # model's device: the same sample (so the same clip) on any device, and host
        # memory for it. The clip found there is copied into ``alpha``, on the model's.
        flat = x.detach().float().flatten().cpu()
        if flat.numel() == 0:
            return
        self._sizes.append(flat.numel())
        # One pass for both: a NaN makes both extremes NaN, an infinity one of them.
        low, high = (float(v) for v in torch.aminmax(flat))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise CalibrationError("calibration activations contain NaN or Inf")
        self._min = min(self._min, low)
        if flat.numel() > _SAMPLES_PER_BATCH:
            picks = torch.randint(flat.numel(), (_SAMPLES_PER_BATCH,), generator=self._generator)
            flat = flat[picks]
        assert self._samples is not None
        self._samples.append(flat)

    @torch.no_grad()
    def finish_calibration(self) -> None:
        """Set the clip level from what :meth:`forward` observed since the start."""
        if not self._samples:
            self._samples = None
            raise CalibrationError("no activations were observed during calibration")
        sample = torch.cat(self._samples)[-MAX_SAMPLES:]
        self._samples = None
        if self.signed is None:
            self.signed = self._min < 0
        magnitude = sample.abs() if self.signed else sample.clamp_min(0)
        if self.method == "percentile":
            k = max(1, round(_PERCENTILE * magnitude.numel()))
            alpha = magnitude.kthvalue(k).values
        else:
            alpha = self._mse_clip(sample, magnitude)
        self.alpha.copy_(alpha.clamp_min(MIN_SCALE))
        self.calibrated.fill_(True)

    def _mse_clip(self, sample: Tensor, magnitude: Tensor) -> Tensor:
        """The clip, among ``_MSE_STEPS`` fractions of the peak, with the least mean squared
        error (the first of equal errors). Only the fractions :mod:`mixq.clip_screen` cannot
        rule out are evaluated, with the float32 operations of a full search, so the result
        is the full search's bit for bit."""
        peak = magnitude.max().clamp_min(MIN_SCALE)
        fractions = torch.linspace(1.0 / _MSE_STEPS, 1.0, _MSE_STEPS, device=magnitude.device)
        best, best_error = peak, float("inf")
        for index in self._clip_contenders(sample, magnitude, peak * fractions):
            alpha = peak * fractions[index]
            error = float(
                (quantize_uniform(sample, alpha, self.bits, signed=bool(self.signed)) - sample)
                .pow(2)
                .mean()
            )
            if error < best_error:
                best, best_error = alpha, error
        return best

    def _clip_contenders(self, sample: Tensor, magnitude: Tensor, alphas: Tensor) -> list[int]:
        """Indices of ``alphas`` whose error can be the least (all where the screen's error
        bound does not hold: values near float32 overflow)."""
        everything = list(range(alphas.numel()))
        if sample.numel() < 2 or float(magnitude.max()) > _SCREEN_MAX_MAGNITUDE:
            return everything
        # Unsigned: values below zero round to 0 whatever the clip, adding their squares.
        below = 0.0 if self.signed else float(sample.clamp_max(0).double().pow(2).sum())
        data = SortedMagnitudes(magnitude.reshape(1, -1))
        levels = (
            torch.arange(self.levels + 1, dtype=torch.float64, device=magnitude.device)
            / self.levels
        )
        candidates = alphas.reshape(1, -1).double()
        errors = estimated_errors(data, candidates, levels) + below
        bound = float32_error_bound(errors, candidates, data, 1.0 / self.levels, levels.numel())
        keep = contenders(errors, bound, divided=True)[0]
        return keep.nonzero().flatten().tolist()

    def get_extra_state(self) -> dict[str, Any]:
        return {"bits": self.bits, "signed": self.signed, "method": self.method}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.bits, self.signed, self.method = state["bits"], state["signed"], state["method"]

    def extra_repr(self) -> str:
        kind = {None: "auto", True: "signed", False: "unsigned"}[self.signed]
        return f"bits={self.bits}, {kind}, method={self.method}"
