"""``to_integer``: trace a quantised model and rebuild its graph on integers.

Every tensor between layers is one activation quantiser's integer levels; each quantised
layer is one fused integer operation (accumulate, requantise with the folded bias and an
optional residual, clamp to the next quantiser's range: ``docs/integer.md``, *Fused layer
contract*). Where the quantisers and requantisation points sit is decided in
:mod:`mixq.integer.builder`.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp

from mixq.batches import model_device
from mixq.errors import IntegerConversionError
from mixq.integer.ops import ENGINES, Engine
from mixq.integer.supported import (
    ADD_FUNCTIONS,
    RELU_FUNCTIONS,
    check_supported,
    is_zero_pad,
)
from mixq.nn.layers import QUANT_LAYERS

__all__ = [
    "ADD_FUNCTIONS",
    "FINE_BITS",
    "RELU_FUNCTIONS",
    "IntegerModel",
    "is_zero_pad",
    "to_integer",
    "trace_quantized",
    "trace_with_shapes",
]

FINE_BITS = 0
"""Extra fractional bits between quantisers: none (every tensor is a quantiser's levels)."""


class IntegerModel(nn.Module):
    """An integer-only model: float in, quantised once at the entrance, float logits out.

    ``forward_integer`` returns the output integers (scale ``output_scale``);
    ``layer_inputs`` names, per quantised layer of the source model, its fused
    :class:`~mixq.integer.ops.IntegerLayer` module, whose first input is that layer's input
    levels (the second, where there is one, the residual's levels).
    """

    def __init__(
        self,
        graph_module: fx.GraphModule,
        output_scale: float,
        layer_inputs: dict[str, str],
        engine: str,
    ) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.output_scale = output_scale
        self.layer_inputs = dict(layer_inputs)
        self.engine = engine

    def forward_integer(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.graph_module(x)

    def _apply(self, fn: Any, recurse: bool = True) -> IntegerModel:
        # Integer arithmetic has one precision: .half() or .to(dtype) would round the
        # entrance step and the float64 accumulation weights, so a cast moves the model's
        # tensors to the device it names and keeps every type.
        def device_only(t: Tensor) -> Tensor:
            return t.to(fn(t.new_empty(0)).device)

        super()._apply(device_only, recurse)
        return self

    def forward(self, x: Tensor) -> Tensor:
        return (self.forward_integer(x).double() * self.output_scale).float()


def to_integer(
    model: nn.Module,
    example_input: Tensor,
    *,
    engine: Literal["reference", "int8", "fast"] = "reference",
) -> IntegerModel:
    """Convert a quantised model (from :func:`mixq.quantize`, calibrated) to integers.

    ``example_input`` fixes the shapes the conversion needs (the number of positions that
    average pooling divides by); the integer model then takes inputs of that shape (any
    batch size). ``engine="reference"`` runs exact float64/int64 kernels; ``"int8"`` runs
    every layer it can through PyTorch's int8 GEMM (oneDNN); ``"fast"`` lowers the
    reference model to the fused C++ kernels of :mod:`mixq.integer.fast` (``"int8"``, with a
    warning, where those are not available). All three give the same integers. The integer
    model is on the model's device (converted on the CPU, then moved); ``"fast"`` needs a
    model on the CPU.

    >>> import torch, mixq
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    >>> data = [torch.randn(8, 3, 10, 10) for _ in range(2)]
    >>> qnet = mixq.quantize(net, "rmsmp", calibration_data=data, progress=False)
    >>> inet = mixq.to_integer(qnet, data[0])
    >>> bool((inet(data[0]).argmax(1) == qnet(data[0]).argmax(1)).all())
    True
    """
    from mixq.integer.builder import build_integer_graph

    if engine not in ENGINES:
        raise IntegerConversionError(f"unknown engine {engine!r}; use one of {ENGINES}")
    device = model_device(model)
    if engine == "fast" and device.type != "cpu":
        raise IntegerConversionError(
            f"the fast engine's kernels run on the CPU, the model is on {device}: convert "
            "model.cpu(), or use engine='reference' or 'int8'"
        )
    # The conversion reads weights and levels as numpy arrays, so it runs on a CPU copy;
    # the integer model then moves to the model's device.
    model = copy.deepcopy(model).cpu().eval()
    example_input = example_input.cpu()
    if not any(isinstance(m, QUANT_LAYERS) for m in model.modules()):
        raise IntegerConversionError("the model has no quantised layer; run mixq.quantize first")
    _check_calibrated(model)
    graph = trace_quantized(model)
    check_supported(graph, dict(model.named_modules()))
    traced = trace_with_shapes(model, example_input, graph)

    def build(kind: Engine) -> IntegerModel:
        graph_module, output_scale, layer_inputs = build_integer_graph(model, traced, kind)
        built = IntegerModel(graph_module, output_scale, layer_inputs, kind)
        return built if device.type == "cpu" else built.to(device)

    if engine != "fast":
        return build(engine)
    reference = build("reference")
    try:
        # The kernels compile on first use, inside lower(): a missing compiler shows up there
        # as FastEngineUnavailableError, an ImportError.
        from mixq.integer.fast import lower

        lowered: IntegerModel = lower(reference)
    except ImportError as exc:
        warnings.warn(
            f"the fast engine is not available ({exc}); running the int8 engine instead",
            RuntimeWarning,
            stacklevel=2,
        )
        return build("int8")
    return lowered


def _check_calibrated(model: nn.Module) -> None:
    for name, module in model.named_modules():
        act = getattr(module, "act_quant", None) if isinstance(module, QUANT_LAYERS) else None
        if act is not None and not bool(act.calibrated):
            raise IntegerConversionError(
                f"layer {name!r}: input quantiser not calibrated; pass calibration data to "
                "mixq.quantize or call mixq.calibrate first"
            )


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, QUANT_LAYERS) or super().is_leaf_module(m, module_qualified_name)


def trace_with_shapes(
    model: nn.Module, example_input: Tensor, graph: fx.Graph | None = None
) -> fx.Graph:
    """The model's fx graph, each node's ``meta["tensor_meta"]`` filled from the example."""
    graph = trace_quantized(model) if graph is None else graph
    with torch.no_grad():
        ShapeProp(fx.GraphModule(model, graph)).propagate(example_input)
    return graph


def trace_quantized(model: nn.Module) -> fx.Graph:
    """The fx graph of ``model`` with its quantised layers as leaves."""
    try:
        return _Tracer().trace(model)
    except Exception as exc:  # fx raises many types on untraceable Python control flow
        raise IntegerConversionError(f"torch.fx cannot trace the model: {exc}") from exc
