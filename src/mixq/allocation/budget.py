"""Limits an allocation must meet: weight size, BOPs, sums of user cost tables, and a
modelled FPGA throughput (:class:`mixq.allocation.fpga_budget.FpgaThroughput`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mixq.allocation.fpga_budget import CYCLES, ONCHIP_BITS, FpgaThroughput
from mixq.errors import AllocationError


@dataclass(frozen=True)
class Budget:
    """Upper limits over the planned layers; ``None`` leaves a quantity free.

    >>> Budget(eq_bits=4.2, costs={"latency": 0.01}).limits()
    {'eq_bits': 4.2, 'latency': 0.01}
    >>> Budget(fpga=FpgaThroughput("xc7z045", 5000)).fpga.images_per_s
    5000.0
    """

    eq_bits: float | None = None  # mean weight bits (weight-count weighted)
    weight_bits: float | None = None  # total bits of the weights (scales and codes excluded)
    bops: float | None = None  # bit operations per sample: MACs x w-bits x a-bits
    costs: Mapping[str, float] = field(default_factory=dict)  # CostTable name -> limit on its sum
    fpga: FpgaThroughput | None = None  # modelled images/s at least a target on a device

    def __post_init__(self) -> None:
        object.__setattr__(self, "costs", dict(self.costs))
        for name, limit in self.limits().items():
            if isinstance(limit, bool) or not isinstance(limit, int | float):
                raise AllocationError(f"budget {name} must be a number, got {limit!r}")
            if not math.isfinite(limit) or limit < 0:
                raise AllocationError(f"budget {name} must be finite and >= 0, got {limit}")
        builtin = {"eq_bits", "weight_bits", "bops", CYCLES, ONCHIP_BITS} & set(self.costs)
        if builtin:
            raise AllocationError(f"cost tables cannot be named {sorted(builtin)}")
        if self.fpga is not None and not isinstance(self.fpga, FpgaThroughput):
            raise AllocationError(f"budget fpga must be an FpgaThroughput, got {self.fpga!r}")

    def limits(self) -> dict[str, float]:
        """Every limit that is set, by name."""
        fixed = {"eq_bits": self.eq_bits, "weight_bits": self.weight_bits, "bops": self.bops}
        return {k: v for k, v in fixed.items() if v is not None} | dict(self.costs)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fpga"] = self.fpga.to_dict() if self.fpga is not None else None
        return out
