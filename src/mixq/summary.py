"""What a quantised model holds: per layer rows per candidate, bits and size; float layers."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from mixq.nn.layers import QUANT_LAYERS

FLOAT_BITS = 32
SCALE_BITS = 32  # one float clip level per row


@dataclass(frozen=True)
class LayerSummary:
    name: str
    kind: str  # "conv2d" or "linear"
    rows: int
    weights: int  # number of weight elements
    counts: dict[str, int]  # rows per candidate, e.g. {"sp2-4": 10, "fixed-4": 6}
    eq_bits: float  # mean weight bits of the layer
    act_bits: int  # bits of the layer input; 0 for float
    bn_folded: bool
    storage_bits: int  # weights at their bits, plus per-row scales, codes and the bias


@dataclass(frozen=True)
class ModelSummary:
    layers: list[LayerSummary]
    float_layers: list[str]  # Conv2d/Linear layers left in float
    other_params: int = field(default=0)  # parameters outside quantised layers (kept float)

    @property
    def eq_bits(self) -> float:
        """Parameter-weighted mean of the quantised layers' weight bits (SPEC section 7)."""
        total = sum(layer.weights for layer in self.layers)
        return sum(layer.eq_bits * layer.weights for layer in self.layers) / max(total, 1)

    @property
    def weight_kib(self) -> float:
        """Storage of the whole model in KiB: quantised layers as stored for inference (with
        folded BN), and every other parameter at 32 bits."""
        bits = sum(layer.storage_bits for layer in self.layers)
        return (bits + self.other_params * FLOAT_BITS) / 8 / 1024


def describe(model: nn.Module) -> ModelSummary:
    """Summarise a (partly) quantised model."""
    layers: list[LayerSummary] = []
    owned: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, QUANT_LAYERS):
            layers.append(_layer_summary(name, module))
            owned.update(id(p) for p in module.parameters())
    float_layers = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and not isinstance(m, QUANT_LAYERS)
    ]
    other = sum(p.numel() for p in model.parameters() if id(p) not in owned)
    return ModelSummary(layers, float_layers, other)


def _layer_summary(name: str, layer: nn.Module) -> LayerSummary:
    assignment = layer.assignment
    rows = assignment.rows
    per_row = layer.weight[0].numel()
    code_bits = max(len(assignment.candidates) - 1, 0).bit_length()
    has_bias = layer.bias is not None or getattr(layer, "bn", None) is not None
    storage = (
        int(assignment.bits_per_row().sum()) * per_row
        + rows * (SCALE_BITS + code_bits)
        + (rows * FLOAT_BITS if has_bias else 0)
    )
    act = layer.act_quant.bits if layer.act_quant is not None else 0
    return LayerSummary(
        name=name,
        kind="conv2d" if isinstance(layer, nn.Conv2d) else "linear",
        rows=rows,
        weights=rows * per_row,
        counts={str(c): n for c, n in assignment.counts().items()},
        eq_bits=assignment.eq_bits,
        act_bits=act,
        bn_folded=getattr(layer, "bn", None) is not None,
        storage_bits=storage,
    )


def fp32_weight_kib(model: nn.Module) -> float:
    """Size of all parameters at 32 bits, in KiB."""
    return sum(p.numel() for p in model.parameters()) * FLOAT_BITS / 8 / 1024
