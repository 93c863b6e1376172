"""What ``mixq report`` says about a quantised model, as one value that saves to JSON."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mixq.assignment import RowAssignment
from mixq.io import atomic_write_text
from mixq.nn.layers import QUANT_LAYERS
from mixq.summary import LayerSummary, ModelSummary, describe, fp32_weight_kib


@dataclass(frozen=True)
class ModelReport:
    model: str  # the built-in model's name
    method: str  # preset, recipe file or plan that produced it
    eq_bits: float  # parameter-weighted mean weight bits of the quantised layers
    weight_kib: float  # storage of the whole model as quantised
    fp32_kib: float  # storage of the float model
    rows_per_candidate: dict[str, int]  # over the whole model
    float_layers: list[str]  # Conv2d/Linear layers left in float
    layers: list[LayerSummary]
    assignments: dict[str, RowAssignment]  # per layer, the candidate of every row

    def to_dict(self) -> dict[str, Any]:
        layers = [
            {
                **asdict(layer),
                "size_kib": layer.storage_bits / 8 / 1024,
                "assignment": self.assignments[layer.name].to_dict(),
            }
            for layer in self.layers
        ]
        head = {k: v for k, v in asdict(self).items() if k not in ("layers", "assignments")}
        return {**head, "layers": layers}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelReport:
        summary_keys = set(LayerSummary.__dataclass_fields__)
        layers = [LayerSummary(**{k: d[k] for k in summary_keys}) for d in data["layers"]]
        assignments = {d["name"]: RowAssignment.from_dict(d["assignment"]) for d in data["layers"]}
        head = {k: v for k, v in data.items() if k != "layers"}
        return cls(**head, layers=layers, assignments=assignments)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


def build_report(
    model: nn.Module, float_model: nn.Module, *, model_name: str, method: str
) -> ModelReport:
    """Summarise quantised ``model``; ``float_model`` (any weights) gives the fp32 size."""
    summary = describe(model)
    assignments = {
        name: module.assignment
        for name, module in model.named_modules()
        if isinstance(module, QUANT_LAYERS)
    }
    totals: Counter[str] = Counter()
    for layer in summary.layers:
        totals.update(layer.counts)
    return ModelReport(
        model=model_name,
        method=method,
        eq_bits=summary.eq_bits,
        weight_kib=summary.weight_kib,
        fp32_kib=fp32_weight_kib(float_model),
        rows_per_candidate=dict(totals),
        float_layers=summary.float_layers,
        layers=summary.layers,
        assignments=assignments,
    )


def format_report(report: ModelReport, summary: ModelSummary) -> str:
    """``mixq.describe``'s table (``str(summary)``), then the model, method and totals."""
    totals = " ".join(f"{c}:{n}" for c, n in report.rows_per_candidate.items())
    return "\n".join(
        [
            str(summary),
            f"{report.model} ({report.method}): {report.weight_kib:.1f} KiB against "
            f"{report.fp32_kib:.1f} KiB in fp32 "
            f"({report.fp32_kib / max(report.weight_kib, 1e-9):.1f}x smaller)",
            f"rows per candidate: {totals}",
        ]
    )
