"""Which float layers :func:`mixq.quantize` swaps, and for what: a registry a user extends.

A mapping turns a float module into a quantised one given its row assignment, the
BatchNorm folded into it (or ``None``), and the activation options of its recipe entry.
The built-ins map ``nn.Conv2d`` to :class:`~mixq.nn.layers.QuantConv2d` and ``nn.Linear``
to :class:`~mixq.nn.layers.QuantLinear`; a subclass of a registered type uses its
nearest registered base. Registering your own layer type::

    def build(module, assignment, *, bn, act_bits, act_signed, act_method):
        return MyQuantLayer.from_float(module, assignment, act_bits=act_bits, ...)

    mixq.register_layer_mapping(MyLayer, build)

The quantised layer must carry ``weight_quant``, ``act_quant`` and ``weight_rows()``, as
the built-in ones do. :func:`mixq.save_quantized` and the integer engine know only the
built-in layers.

Weight layers no mapping covers (``nn.Conv1d``, Hugging Face GPT-2's ``Conv1D``, ...) stay
in float: :func:`unsupported_weight_layers` names them, ``quantize`` warns with
:class:`~mixq.errors.FloatLayerWarning` and ``describe(model).float_layers`` lists them.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor, nn

from mixq.assignment import RowAssignment
from mixq.errors import UnsupportedLayerError
from mixq.nn.layers import QUANT_LAYERS, QuantConv2d, QuantLinear


class LayerBuilder(Protocol):
    def __call__(
        self,
        module: Any,
        assignment: RowAssignment,
        *,
        bn: nn.Module | None,
        act_bits: int,
        act_signed: bool | None,
        act_method: str,
    ) -> nn.Module: ...


def _conv2d(module: Any, assignment: RowAssignment, *, bn: Any, **act: Any) -> nn.Module:
    return QuantConv2d.from_float(module, assignment, bn=bn, **act)


def _linear(module: Any, assignment: RowAssignment, *, bn: Any, **act: Any) -> nn.Module:
    if bn is not None:
        raise UnsupportedLayerError("a BatchNorm can be folded into a Conv2d only")
    return QuantLinear.from_float(module, assignment, **act)


_MAPPINGS: dict[type[nn.Module], LayerBuilder] = {nn.Conv2d: _conv2d, nn.Linear: _linear}
_BUILTIN = frozenset(_MAPPINGS)


def register_layer_mapping(
    float_type: type[nn.Module], build: LayerBuilder, *, replace: bool = False
) -> None:
    """Let :func:`mixq.quantize` swap ``float_type`` layers with ``build`` (see above)."""
    if not (isinstance(float_type, type) and issubclass(float_type, nn.Module)):
        raise UnsupportedLayerError(f"a layer mapping needs an nn.Module class, got {float_type!r}")
    if not callable(build):
        raise UnsupportedLayerError(f"the builder for {float_type.__name__} is not callable")
    if float_type in _BUILTIN or (float_type in _MAPPINGS and not replace):
        raise UnsupportedLayerError(f"{float_type.__name__} already has a layer mapping")
    if issubclass(float_type, QUANT_LAYERS):
        raise UnsupportedLayerError(f"{float_type.__name__} is already a quantised layer")
    _MAPPINGS[float_type] = build


def layer_builder(module: nn.Module) -> LayerBuilder | None:
    """The mapping for ``module`` (its nearest registered base class), or ``None``."""
    if isinstance(module, QUANT_LAYERS):
        return None
    for klass in type(module).__mro__:
        if klass in _MAPPINGS:
            return _MAPPINGS[klass]
    return None


def weight_row_count(module: nn.Module) -> int:
    """The rows of a mapped layer's weight (its first dimension), as quantisation sees them."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        raise UnsupportedLayerError(f"a {type(module).__name__} has no weight tensor to quantise")
    return weight.shape[0]


def is_quantizable(module: nn.Module) -> bool:
    return layer_builder(module) is not None


def mapped_types() -> tuple[type[nn.Module], ...]:
    return tuple(_MAPPINGS)


# Weight layers that look quantisable but have no mapping. GPT-2's Conv1D (transformers)
# is a Linear with its weight stored transposed, (in, out); it is matched by name so that
# transformers need not be imported.
_UNMAPPED_WEIGHT_NAMES = frozenset({"Conv1D"})


def unsupported_weight_layers(model: nn.Module) -> list[str]:
    """Names of convolutions and linear-like layers that no mapping covers (left in float)."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, QUANT_LAYERS) or is_quantizable(module):
            continue
        linear_like = type(module).__name__ in _UNMAPPED_WEIGHT_NAMES or isinstance(
            module, nn.Bilinear
        )
        if isinstance(module, nn.modules.conv._ConvNd) or linear_like:
            names.append(name)
    return names


def unfolded_batchnorms(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers that run on their own (not folded into a conv)."""
    folded = {id(m.bn) for m in model.modules() if isinstance(m, QuantConv2d) and m.bn is not None}
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in folded
    ]
