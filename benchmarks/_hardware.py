"""Modelled FPGA images/s (XC7Z020, XC7Z045, batch 1) and weight KiB of a quantised model,
from mixq's FPGA cost model: the figures are the model's, not measurements.

Uses :func:`mixq.hw.hardware_point` where this mixq has it; otherwise the same figures
from :class:`~mixq.hw.FpgaCostModel` directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

import mixq
from mixq.hw import AcceleratorConfig, FpgaCostModel, plan_from_summary
from mixq.plan import LayerShape
from mixq.shapes import measure_layer_shapes

DEVICES = ("xc7z020", "xc7z045")


def layer_shapes(model: nn.Module, example: Any) -> dict[str, LayerShape]:
    """Per-sample layer shapes of ``model`` on one batch ``example`` (as calibration takes it)."""
    return measure_layer_shapes(model, example)


def hardware_figures(
    model: nn.Module, shapes: Mapping[str, LayerShape], act_bits: int
) -> dict[str, Any]:
    """``fpga_images_per_s`` per device, ``fpga_latency_ms`` and ``weight_kib`` (every
    weight at its row's bits; no scales or biases) of a quantised ``model``."""
    summary = mixq.describe(model)
    try:
        from mixq.hw import hardware_point  # type: ignore[attr-defined]
    except ImportError:
        hardware_point = None
    if hardware_point is not None:
        point = hardware_point(summary, shapes, devices=DEVICES, act_bits=act_bits)
        return {
            "fpga_images_per_s": {d: round(v, 2) for d, v in point.images_per_s.items()},
            "fpga_latency_ms": {d: round(v, 4) for d, v in point.latency_ms.items()},
            "weight_kib": round(point.weight_kib, 2),
            "fpga_assumptions": dict(point.assumptions),
        }
    plan = plan_from_summary(summary)
    images: dict[str, float] = {}
    latency: dict[str, float] = {}
    weight_kib = 0.0
    for device in DEVICES:
        report = FpgaCostModel(device, AcceleratorConfig()).cost(shapes, plan, act_bits=act_bits)
        seconds = report.totals.latency_s
        images[device] = round(1.0 / seconds, 2)
        latency[device] = round(seconds * 1e3, 4)
        weight_kib = report.totals.weight_kib
    return {
        "fpga_images_per_s": images,
        "fpga_latency_ms": latency,
        "weight_kib": round(weight_kib, 2),
        "fpga_assumptions": {"config": "AcceleratorConfig() defaults", "batch": 1},
    }
