"""Sensitivity tables made up for tests (no Hessian run)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mixq.plan import LayerShape
from mixq.sensitivity import HutchinsonConfig, LayerSensitivity, SensitivityTable, TraceRun
from mixq.shapes import measure_layer_shapes


def made_up_table(
    model: nn.Module, example: torch.Tensor, row_traces: dict[str, np.ndarray] | None = None
) -> SensitivityTable:
    """A table with every row trace 1 (or as given) for the Conv2d/Linear layers of
    ``model``; names and shapes measured on ``example``."""
    shapes: dict[str, LayerShape] = measure_layer_shapes(model, example)
    layers = {}
    for name, shape in shapes.items():
        traces = (row_traces or {}).get(name, np.ones(shape.rows))
        layers[name] = LayerSensitivity(
            shape, 10, float(traces.sum()), 0.0, traces, np.zeros(shape.rows)
        )
    run = TraceRun("made-up", "", "none", HutchinsonConfig(), 10, 10, 0, True, 0.0, 0.0)
    return SensitivityTable(layers, run)
