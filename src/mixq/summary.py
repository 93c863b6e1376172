"""What a quantised model holds: per layer rows per candidate, bits and size; float layers.

Two sizes, both in KiB, and they differ on purpose:

- :attr:`ModelSummary.weight_kib`, **the model size**: what the quantised model stores for
  inference. Every quantised weight at its row's bits, plus per row one fp32 clip level,
  the row's candidate code (``ceil(log2(candidates))`` bits) and an fp32 bias where the
  layer has one (a folded BN always gives one), plus every other parameter at 32 bits.
  ``mixq report``/``quantize`` print this.
- :attr:`ModelSummary.weights_only_kib`: the quantised weights at their bits and nothing
  else, what a hardware cost model moves (``mixq cost`` and :mod:`mixq.hw` report this).

For the RMSMP ResNet-20 the two are 143.8 and 138.2 KiB: the 5.6 KiB between them are the
698 rows' scales, codes and biases (``conv1``: 16 rows x 27 weights x 8 bits = 0.42 KiB of
weights, plus 16 x (32 + 32) bits of scale and bias = 0.55 KiB stored).

``print(describe(model))`` prints the per-layer table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from mixq.mappings import is_quantizable, unfolded_batchnorms, unsupported_weight_layers
from mixq.nn.layers import QUANT_LAYERS, QuantConv2d, QuantLinear

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

    @property
    def weights_only_bits(self) -> int:
        """The weights at their rows' bits, without scales, codes or bias."""
        return round(self.eq_bits * self.weights)


@dataclass(frozen=True)
class ModelSummary:
    layers: list[LayerSummary]
    float_layers: list[str]  # weight layers left in float (skipped, or with no mapping)
    other_params: int = field(default=0)  # parameters outside quantised layers (kept float)
    unfolded_bn: list[str] = field(default_factory=list)  # BatchNorms running on their own

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

    @property
    def weights_only_kib(self) -> float:
        """The quantised layers' weights at their bits only, in KiB (the hardware figure)."""
        return sum(layer.weights_only_bits for layer in self.layers) / 8 / 1024

    def __str__(self) -> str:
        head = (
            f"{'layer':24s} {'kind':6s} {'rows':>5s}  {'rows per candidate':36s} "
            f"{'eq bits':>7s} {'a bits':>6s} {'BN':>3s} {'KiB':>8s}"
        )
        lines = [head, "-" * len(head)]
        for layer in self.layers:
            counts = " ".join(f"{c}:{n}" for c, n in layer.counts.items())
            lines.append(
                f"{layer.name[:24]:24s} {layer.kind:6s} {layer.rows:5d}  {counts[:36]:36s} "
                f"{layer.eq_bits:7.2f} {layer.act_bits or 'float':>6} "
                f"{'yes' if layer.bn_folded else 'no':>3s} {layer.storage_bits / 8192:8.2f}"
            )
        lines += [
            "-" * len(head),
            f"{self.eq_bits:.3f} equivalent weight bits; model size {self.weight_kib:.1f} KiB "
            f"(weights alone {self.weights_only_kib:.1f} KiB)",
            f"float layers: {', '.join(self.float_layers) or 'none'}",
        ]
        if self.unfolded_bn:
            lines.append(f"unfolded BatchNorms: {', '.join(self.unfolded_bn)}")
        return "\n".join(lines)


def describe(model: nn.Module) -> ModelSummary:
    """Summarise a (partly) quantised model.

    >>> import torch
    >>> import mixq
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> q = mixq.quantize(net, mixq.Recipe.preset("fixed4", first_last=None), progress=False)
    >>> print(describe(q).weights_only_kib * 8192)  # (8*4 + 4*2) weights x 4 bits
    160.0
    >>> print(str(describe(q)).splitlines()[2].split())
    ['0', 'linear', '4', 'fixed-4:4', '4.00', '8', 'no', '0.05']

    With GPTQ rounding (the default when calibration data is given) the quantised model's
    float weights are the rounded-with-feedback values, not the input model's.
    """
    layers: list[LayerSummary] = []
    owned: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, QUANT_LAYERS):
            layers.append(_layer_summary(name, module))
            owned.update(id(p) for p in module.parameters())
    unsupported = set(unsupported_weight_layers(model))
    float_layers = [
        name for name, m in model.named_modules() if is_quantizable(m) or name in unsupported
    ]
    other = sum(p.numel() for p in model.parameters() if id(p) not in owned)
    return ModelSummary(layers, float_layers, other, unfolded_batchnorms(model))


def _layer_summary(name: str, layer: QuantConv2d | QuantLinear) -> LayerSummary:
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
