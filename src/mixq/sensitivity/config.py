"""Settings of a Hutchinson trace run (torch-free: tables record them)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mixq.errors import SensitivityError

StopRule = Literal["stderr", "change"]
ProbeScope = Literal["layer", "model"]
HvpMode = Literal["forward-over-reverse", "reverse-over-reverse"]

HVP_MODES: tuple[str, ...] = ("forward-over-reverse", "reverse-over-reverse")


@dataclass(frozen=True)
class HutchinsonConfig:
    """How traces are estimated and when probing stops.

    >>> HutchinsonConfig(tolerance=0.1, max_probes=50).probe_scope
    'layer'
    """

    tolerance: float = 0.05  # stop a layer once its relative standard error (or change) <= this
    stop_on: StopRule = "stderr"  # "stderr": std error / |trace|; "change": |Δmean| / |mean|
    min_probes: int = 8  # per layer, before a layer may stop (at least 2)
    max_probes: int = 100  # per layer: the cap
    batches_per_probe: int = 1  # batches whose Hessians one product averages
    # "layer": each product probes one layer (v is zero elsewhere), so the estimate carries
    # no cross-layer Hessian terms: far less variance per product, one product per layer.
    # "model": one product probes every layer at once: cheaper per round, noisier per layer.
    probe_scope: ProbeScope = "layer"
    hvp_mode: HvpMode = "forward-over-reverse"  # jvp of grad; or double backprop
    # Probes computed together in one vectorised product (torch.func.vmap). Samples are
    # still added one at a time under the stopping rule, so the estimate is the same
    # estimator; a layer's last product may compute a few probes that are then unused.
    probes_per_product: int = 8
    fold_bn: bool = True  # w.r.t. BN-folded weights, which is what the quantiser sees
    seed: int = 0  # seeds the probes

    def __post_init__(self) -> None:
        if not (self.tolerance > 0 and math.isfinite(self.tolerance)):
            raise SensitivityError(f"tolerance must be a positive number, got {self.tolerance!r}")
        if self.stop_on not in ("stderr", "change"):
            raise SensitivityError(f"stop_on must be 'stderr' or 'change', got {self.stop_on!r}")
        if not 2 <= self.min_probes <= self.max_probes:
            raise SensitivityError(
                f"need 2 <= min_probes <= max_probes, got min_probes={self.min_probes}, "
                f"max_probes={self.max_probes} (a standard error needs two probes)"
            )
        if self.probes_per_product < 1:
            raise SensitivityError(
                f"probes_per_product must be >= 1, got {self.probes_per_product}"
            )
        if self.batches_per_probe < 1:
            raise SensitivityError(f"batches_per_probe must be >= 1, got {self.batches_per_probe}")
        if self.probe_scope not in ("layer", "model"):
            raise SensitivityError(
                f"probe_scope must be 'layer' or 'model', got {self.probe_scope!r}"
            )
        if self.hvp_mode not in HVP_MODES:
            raise SensitivityError(
                f"unknown HVP mode {self.hvp_mode!r}; use one of {', '.join(HVP_MODES)}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HutchinsonConfig:
        return cls(**data)
