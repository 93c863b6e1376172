"""Modelled FPGA images/s (XC7Z020, XC7Z045, batch 1) and weight KiB of a quantised model,
from mixq's FPGA cost model (:func:`mixq.hw.hardware_point`): the model's figures, not
measurements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

import mixq
from mixq.hw import hardware_point
from mixq.plan import LayerShape
from mixq.shapes import measure_layer_shapes

DEVICES = ("xc7z020", "xc7z045")


def layer_shapes(model: nn.Module, example: Any) -> dict[str, LayerShape]:
    """Per-sample layer shapes of ``model`` on one batch ``example`` (as calibration takes it)."""
    return measure_layer_shapes(model, example)


def hardware_figures(
    model: nn.Module, shapes: Mapping[str, LayerShape], act_bits: int
) -> dict[str, Any]:
    """``fpga_images_per_s`` and ``fpga_latency_ms`` per device, and ``weight_kib`` (every
    weight at its row's bits; no scales or biases) of a quantised ``model``."""
    point = hardware_point(mixq.describe(model), shapes, devices=DEVICES, act_bits=act_bits)
    return {
        "fpga_images_per_s": {d: round(v, 2) for d, v in point.images_per_s.items()},
        "fpga_latency_ms": {d: round(v, 4) for d, v in point.latency_ms.items()},
        "weight_kib": round(point.weight_kib, 2),
        "fpga_assumptions": dict(point.assumptions),
    }
