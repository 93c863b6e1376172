"""What a cost model returns: per-layer costs, their totals and (for an FPGA) the design.

Every value is a frozen dataclass that saves to JSON and loads back; totals are always
computed from the layers, so they cannot disagree with them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from mixq.errors import HardwareCostError
from mixq.io import atomic_write_text
from mixq.jsonfile import read_json

REPORT_VERSION = 1
BITS_PER_KIB = 8 * 1024

# Which activation bits a DSP row's packing is chosen for (AcceleratorConfig.dsp_packing).
DspPackingRule = Literal["per-layer", "widest"]


@dataclass(frozen=True)
class LayerCost:
    """One layer's costs per input sample; the FPGA fields are None for other models."""

    name: str
    rows: Mapping[str, int]  # rows per candidate, e.g. {"sp2-4": 38, "fixed-4": 26}
    act_bits: int
    weights: int  # weight elements
    macs: int
    weight_bits: int  # every weight at its row's bits
    bops: int  # MACs x weight bits x activation bits
    cycles: int | None = None  # max(compute_cycles, transfer_cycles)
    dsp_cycles: int | None = None  # cycles the DSP array is busy
    lut_cycles: int | None = None  # cycles the LUT array is busy
    latency_s: float | None = None  # cycles / clock
    bram36: int | None = None  # 36 Kb blocks for the layer's weights, input and output
    compute_cycles: int | None = None  # the slower array's cycles
    transfer_cycles: int | None = None  # cycles to move ddr_bytes at the board's bandwidth
    ddr_bytes: int | None = None  # off-chip traffic per sample: what does not stay on chip

    @property
    def eq_bits(self) -> float:
        """Mean bits of the layer's weights."""
        return self.weight_bits / self.weights if self.weights else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rows"] = dict(self.rows)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerCost:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Resources:
    """Counts of the FPGA resources the model tracks."""

    luts: float = 0
    ffs: float = 0
    carry: float = 0  # carry chain in 4-bit segments (CARRY4s; a CARRY8 counts two)
    dsps: float = 0
    bram36: float = 0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Resources:
        return cls(**data)


@dataclass(frozen=True)
class FpgaDesign:
    """The accelerator a plan gets on a device: one configuration serves every layer."""

    device: str
    clock_mhz: float
    # DSP candidate -> MACs/cycle of the whole array, at the widest activation it meets
    dsp_macs_per_cycle: Mapping[str, int]
    lut_units: Mapping[str, int]  # LUT candidate -> MAC units in the LUT array
    unit_act_bits: Mapping[str, int]  # candidate -> activation bits its units were sized for
    used: Resources  # by the MAC arrays (bram36: the largest layer's need)
    available: Resources  # on the device
    lut_share: float  # share of LUTs, FFs and carry cells the MAC arrays may take
    dsp_share: float  # share of DSPs the DSP array takes
    lut_clock_ratio: float = 1.0  # LUT array's clock over the DSP array's
    weights_on_chip: bool = True  # every layer's weights (and the largest layer's
    # activations) fit in block RAM, so only activations that do not fit go off chip
    ddr_bytes_per_cycle: float | None = None  # None: off-chip memory not modelled
    # DSP candidate -> a layer's activation bits -> MACs/cycle of the whole array there
    # (empty: dsp_macs_per_cycle at every width, as a design saved before it was added)
    dsp_macs_by_act: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    dsp_packing: DspPackingRule = "widest"  # the AcceleratorConfig rule it was built with

    def dsp_rate(self, candidate: str, act_bits: int) -> int:
        """MACs per cycle of the DSP array on ``candidate`` rows of a layer whose inputs
        have ``act_bits``: as built for that width, else for the nearest wider one (a
        packing sound at wider activations is sound at narrower ones).

        >>> design = FpgaDesign("d", 200, {"fixed-4": 100}, {}, {}, Resources(), Resources(),
        ...                     1, 1, dsp_macs_by_act={"fixed-4": {4: 200, 8: 100}})
        >>> [design.dsp_rate("fixed-4", bits) for bits in (4, 2, 8)]
        [200, 200, 100]
        """
        if candidate not in self.dsp_macs_per_cycle:
            raise HardwareCostError(f"the design has no DSP rows for {candidate}")
        rates = self.dsp_macs_by_act.get(candidate)
        if not rates:
            return self.dsp_macs_per_cycle[candidate]
        wider = [a for a in rates if a >= act_bits]
        if not wider:
            raise HardwareCostError(
                f"the DSP array was built for {candidate} at up to {max(rates)}-bit "
                f"activations, not {act_bits}"
            )
        return rates[min(wider)]

    @property
    def peak_macs_per_cycle(self) -> int:
        """MACs per cycle with every unit busy, counting the DSP array at its best packing."""
        best = [r for rates in self.dsp_macs_by_act.values() for r in rates.values()]
        dsp = max([*self.dsp_macs_per_cycle.values(), *best], default=0)
        return dsp + sum(self.lut_units.values())

    @property
    def fits_on_chip(self) -> bool:
        """Whether the largest layer's weights and activations fit in block RAM at once."""
        return self.used.bram36 <= self.available.bram36

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["used"] = self.used.to_dict()
        out["available"] = self.available.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FpgaDesign:
        values = dict(data)
        values["used"] = Resources.from_dict(values["used"])
        values["available"] = Resources.from_dict(values["available"])
        values["dsp_macs_by_act"] = {  # JSON keys are text
            c: {int(a): r for a, r in rates.items()}
            for c, rates in values.get("dsp_macs_by_act", {}).items()
        }
        packing = values.get("dsp_packing", "widest")
        if packing not in get_args(DspPackingRule):
            raise HardwareCostError(
                f"design's dsp_packing must be one of {get_args(DspPackingRule)}, got {packing!r}"
            )
        return cls(**values)


@dataclass(frozen=True)
class CostTotals:
    """Sums over the layers (cycles add: layers run one after another)."""

    macs: int
    weight_bits: int
    bops: int
    cycles: int | None  # None where the model has no notion of time
    latency_s: float | None

    @property
    def weight_kib(self) -> float:
        return self.weight_bits / BITS_PER_KIB

    @property
    def gbops(self) -> float:
        return self.bops / 1e9


@dataclass(frozen=True)
class CostReport:
    """A cost model's answer for one plan on one model (and device)."""

    model: str  # what was costed, e.g. "resnet18-imagenet"
    cost_model: str  # "compute" or "fpga"
    layers: tuple[LayerCost, ...]
    design: FpgaDesign | None = None
    unplanned: tuple[str, ...] = ()  # layers with a shape but no plan (left in float)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    version: int = REPORT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "unplanned", tuple(self.unplanned))

    @property
    def totals(self) -> CostTotals:
        timed = [layer.cycles for layer in self.layers if layer.cycles is not None]
        latencies = [layer.latency_s for layer in self.layers if layer.latency_s is not None]
        return CostTotals(
            macs=sum(layer.macs for layer in self.layers),
            weight_bits=sum(layer.weight_bits for layer in self.layers),
            bops=sum(layer.bops for layer in self.layers),
            cycles=sum(timed) if len(timed) == len(self.layers) and timed else None,
            latency_s=sum(latencies) if len(latencies) == len(self.layers) and latencies else None,
        )

    @property
    def eq_bits(self) -> float:
        """Weight-count-weighted mean bits (SPEC section 7)."""
        weights = sum(layer.weights for layer in self.layers)
        return sum(layer.weight_bits for layer in self.layers) / weights if weights else 0.0

    def layer(self, name: str) -> LayerCost:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise HardwareCostError(f"no layer {name!r} in the report")

    def to_dict(self) -> dict[str, Any]:
        totals = self.totals
        return {
            "version": self.version,
            "model": self.model,
            "cost_model": self.cost_model,
            "metadata": dict(self.metadata),
            "totals": {**asdict(totals), "weight_kib": totals.weight_kib, "eq_bits": self.eq_bits},
            "design": self.design.to_dict() if self.design is not None else None,
            "unplanned": list(self.unplanned),
            "layers": [layer.to_dict() for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostReport:
        try:
            if data.get("version", REPORT_VERSION) != REPORT_VERSION:
                raise HardwareCostError(f"cost report version {data['version']} is not supported")
            design = data.get("design")
            return cls(
                model=data["model"],
                cost_model=data["cost_model"],
                layers=tuple(LayerCost.from_dict(d) for d in data["layers"]),
                design=FpgaDesign.from_dict(design) if design is not None else None,
                unplanned=tuple(data.get("unplanned", ())),
                metadata=data.get("metadata", {}),
            )
        except (KeyError, TypeError) as exc:
            raise HardwareCostError(f"malformed cost report: {exc}") from None

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CostReport:
        return cls.from_dict(read_json(path, "cost report", HardwareCostError))
