"""Modelled FPGA throughput and weight size of a quantised model or plan, for putting
accuracy beside hardware cost (a Pareto plot of top-1 against images/s and weight KiB).

>>> shapes = {"conv": LayerShape("conv", "conv2d", 64, 576, 196, 8192, 12544),
...           "fc": LayerShape("fc", "linear", 10, 64, 1, 64, 10)}
>>> plan = Plan.from_dict({"layers": {
...     "conv": {"ratio": {"sp2-4": 0.5, "fixed-4": 0.5}, "act_bits": 4},
...     "fc": {"ratio": {"fixed-8": 1.0}, "act_bits": 8}}})
>>> point = hardware_point(plan, shapes)
>>> sorted(point.images_per_s) == ["xc7z020", "xc7z045"]
True
>>> point.images_per_s["xc7z045"] > point.images_per_s["xc7z020"], round(point.weight_kib, 3)
(True, 18.625)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mixq.errors import HardwareCostError
from mixq.hw.fpga import AcceleratorConfig, FpgaCostModel
from mixq.hw.from_model import plan_from_summary
from mixq.plan import LayerShape, Plan

PARETO_DEVICES = ("xc7z020", "xc7z045")


@dataclass(frozen=True)
class HardwarePoint:
    """One model on each device: modelled images/s (batch 1) and its weight size."""

    images_per_s: Mapping[str, float]  # device -> modelled images per second
    latency_ms: Mapping[str, float]  # device -> modelled milliseconds per image
    weight_kib: float  # every weight at its row's bits (no scales or biases)
    eq_bits: float  # weight-count-weighted bits over the planned layers
    assumptions: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fpga_images_per_s": dict(self.images_per_s),
            "fpga_latency_ms": dict(self.latency_ms),
            "weight_kib": self.weight_kib,
            "eq_bits": self.eq_bits,
            "assumptions": dict(self.assumptions),
        }


def hardware_point(
    source: Any,
    shapes: Mapping[str, LayerShape],
    *,
    devices: Sequence[str] = PARETO_DEVICES,
    config: AcceleratorConfig | None = None,
    act_bits: int = 8,
) -> HardwarePoint:
    """Images/s on each of ``devices`` and weight KiB of ``source``: a :class:`Plan`, a
    :func:`mixq.describe` summary, or a quantised torch model (described here).

    ``shapes`` are the model's layer shapes (:func:`mixq.shapes.measure_layer_shapes` on
    one sample); ``act_bits`` applies where the plan leaves a layer's unset. The figures
    are the FPGA model's (:class:`~mixq.hw.fpga.FpgaCostModel`, off-chip memory included),
    not measurements.
    """
    plan = _as_plan(source)
    config = config or AcceleratorConfig()
    images: dict[str, float] = {}
    latency: dict[str, float] = {}
    report = None
    for device in devices:
        report = FpgaCostModel(device, config).cost(shapes, plan, act_bits=act_bits)
        seconds = report.totals.latency_s
        if not seconds:
            raise HardwareCostError(f"{device}: the plan has no layer with work to cost")
        images[device] = 1.0 / seconds
        latency[device] = seconds * 1e3
    if report is None:
        raise HardwareCostError("no device to cost on")
    return HardwarePoint(
        images,
        latency,
        report.totals.weight_kib,
        report.eq_bits,
        {
            "lut_share": config.lut_share,
            "lut_clock_ratio": config.lut_clock_ratio,
            "lane_overhead_luts": config.lane_overhead_luts,
            "offchip_memory": config.offchip_memory,
            "dsp_packing": config.dsp_packing,
            "batch": 1,
        },
    )


def _as_plan(source: Any) -> Plan:
    if isinstance(source, Plan):
        return source
    if hasattr(source, "layers"):  # a ModelSummary
        return plan_from_summary(source)
    if hasattr(source, "named_modules"):  # a torch model: describe it (torch is there)
        from mixq.summary import describe

        return plan_from_summary(describe(source))
    raise HardwareCostError(
        f"cannot cost a {type(source).__name__}: pass a Plan, mixq.describe(model) or the "
        "quantised model"
    )
