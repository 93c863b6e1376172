"""Packed checkpoints of an integer model: weights at their bit width, in one safetensors file.

:func:`save_packed` writes an :class:`~mixq.integer.compile.IntegerModel`;
:func:`load_packed` rebuilds it (same graph, same modules, bit-identical integers) without
the float model it came from, and refuses a file that is truncated, edited or of another
version with :class:`~mixq.errors.PackedFormatError`.

Format ``mixq-packed``, version 2
---------------------------------
Tensors (safetensors, little-endian), for each module ``M`` of the integer graph:

- ``IntegerLayer`` ``M`` with ``R`` rows of ``E`` weights each and candidates ``C``:

  - ``M.codes``: uint8 ``(R,)``, row ``r``'s index into the layer's ``candidates``;
  - ``M.weight.<c>`` for each candidate ``c`` with at least one row: uint8, the packed
    weights of the rows with that code, in ascending row order, each row's ``E`` integers in
    C order. Each integer is stored as its *level index*, its position ``0..L-1`` in the
    candidate's sorted signed integer grid (``sp2-4``: -8,-6,-5,-4,-2,-1,0,1,2,4,5,6,8), in
    exactly ``c.bits`` bits: every ``b``-bit grid has at most ``2^b`` levels. The indices form
    one LSB-first bit stream (value ``i`` in stream bits ``[i*b, (i+1)*b)``, stream bit ``j``
    is bit ``j % 8`` of byte ``j // 8``): two 4-bit values per byte (the first in the low
    nibble), 8-bit values as bytes, 3-bit values densely across byte boundaries. The group
    takes ``ceil(bits * rows_in_group * E / 8)`` bytes, at most the per-row bound
    ``sum over its rows of ceil(bits * E / 8)``; only its last byte has padding.
  - ``M.multiplier``, ``M.shift``, ``M.offset``: int64 ``(R,)``, each row's requantisation
    ``clamp((acc * multiplier + offset (+ residual * residual_multiplier) + 2^(shift-1))
    >> shift, low, high)`` (``docs/integer.md``, *Fused layer contract*).

- ``QuantizeInput`` ``M``: ``M.step``, float32 scalar, the input's activation step.
- ``Lookup`` ``M``: ``M.table``, int64 ``(L,)``, the next grid's level of each input level.

Metadata key ``"mixq"``: a JSON header with ``format`` (``"mixq-packed"``), ``version``
(2), ``candidates`` (every candidate the file uses), ``output_scale``, ``layer_inputs``,
``modules`` (name to ``kind`` and scalar attributes: ``low``/``high`` (``null``: no clamp),
``multiplier``/``shift``, ``m_a``/``m_b`` (``AddLevels``), ``keepdim``,
``kernel``/``stride``/``padding``, ``function`` (``Lookup``), and for layers
``weight_shape``, ``candidates``, ``conv`` and ``residual_multiplier``), ``nodes`` (the fx
graph in order, as :mod:`mixq.export.fx_encoding` writes it) and ``checksum``:
``"sha256:"`` and the hex digest of :func:`checksum` (the header without its checksum, then
every tensor's name, dtype, shape and bytes). Function targets come from a fixed table and
every name read is checked to be a plain identifier (:mod:`mixq.export.fx_encoding`):
nothing in a file runs as code. A reader of version 2 refuses any other version: version 1
held the integer graph before the fused-layer engine.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mixq.errors import IntegerConversionError, MixqError, PackedFormatError
from mixq.export.bits import pack_levels, packed_bytes, unpack_levels
from mixq.export.fx_encoding import decode_graph, encode_node, module_name
from mixq.export.fx_encoding import field as _get
from mixq.integer.compile import IntegerModel
from mixq.integer.dyadic import MAX_SHIFT, MULTIPLIER_BITS
from mixq.integer.ops import (
    ENGINES,
    AddLevels,
    Engine,
    GlobalAvgPool,
    IntegerLayer,
    Lookup,
    MaxPool,
    QuantizeInput,
    Requantize,
    Rescale,
    layer_engine,
)
from mixq.integer.weights import IntegerWeights
from mixq.io import atomic_write
from mixq.jsonfile import parse_metadata_header
from mixq.schemes import Candidate

FORMAT_NAME = "mixq-packed"
FORMAT_VERSION = 2
_HEADER_KEY = "mixq"

_MAX_OFFSET = 2**62  # compile keeps every offset below this, so products stay in int64
_LEVEL_LIMIT = 2**31 - 1  # every level and clamp bound of the integer graph fits int32
_MAX_TABLE = 2**16 + 1  # lookup tables cover at most 16-bit input levels
LOOKUP_FUNCTIONS = ("hardswish", "silu", "sigmoid")


def _buffer(module: nn.Module, name: str) -> Tensor:
    """A module's buffer, typed (nn.Module's attribute lookup is untyped)."""
    value = getattr(module, name)
    if not isinstance(value, Tensor):
        raise PackedFormatError(f"{type(module).__name__}.{name} is not a tensor")
    return value


# -- public API ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PackedSize:
    """Bytes of a model's packed file, against its weights as float32."""

    weight_bytes: int  # the packed weight integers of every layer
    float_weight_bytes: int  # the same weights as float32
    other_bytes: int  # codes, multipliers, shifts, offsets, activation steps

    @property
    def ratio(self) -> float:
        """How many times smaller the packed weights are than float32 ones."""
        return self.float_weight_bytes / max(self.weight_bytes, 1)


def save_packed(model: IntegerModel, path: str | Path) -> None:
    """Write ``model`` to ``path`` (a temporary file, then a rename: never half-written)."""
    tensors, header = _encode(model)
    header["checksum"] = checksum(header, tensors)
    metadata = {_HEADER_KEY: json.dumps(header)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_packed(path: str | Path, engine: Engine = "reference") -> IntegerModel:
    """Rebuild the integer model saved at ``path``, running on ``engine`` (``"fast"``: the
    reference model lowered to :mod:`mixq.integer.fast`'s kernels, ``"int8"`` with a
    warning where they are not available, as :func:`~mixq.integer.to_integer` does)."""
    if engine not in ENGINES:
        raise IntegerConversionError(f"unknown engine {engine!r}; use one of {ENGINES}")
    header, tensors = _read(Path(path))
    if engine != "fast":
        return _decode(path, header, tensors, engine)
    try:
        from mixq.integer.fast import lower
    except ImportError as exc:
        warnings.warn(
            f"the fast engine is not available ({exc}); loading the int8 engine instead",
            RuntimeWarning,
            stacklevel=2,
        )
        return _decode(path, header, tensors, "int8")
    lowered: IntegerModel = lower(_decode(path, header, tensors, "reference"))
    return lowered


def _decode(
    path: str | Path, header: dict[str, Any], tensors: dict[str, Tensor], engine: Engine
) -> IntegerModel:
    try:
        return _Decoder(header, tensors, engine).build()
    except PackedFormatError as exc:
        raise PackedFormatError(f"{path}: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as exc:
        # Only a hand-made file that carries a valid checksum gets here.
        raise PackedFormatError(f"{path}: cannot rebuild the model ({exc})") from None


def packed_size(model: IntegerModel) -> PackedSize:
    """The sizes :func:`save_packed` would write for ``model``'s tensors."""
    tensors, _ = _encode(model)
    # Module names have no dots, so ".weight." marks exactly the packed weight tensors.
    weight = sum(t.numel() for name, t in tensors.items() if ".weight." in name)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    layers = [m for m in model.graph_module.modules() if isinstance(m, IntegerLayer)]
    float_bytes = sum(4 * _buffer(m, "weight").numel() for m in layers)
    return PackedSize(weight, float_bytes, total - weight)


def checksum(header: dict[str, Any], tensors: dict[str, Tensor]) -> str:
    """``"sha256:<hex>"`` of the header (less its ``checksum``) and every tensor."""
    digest = hashlib.sha256()
    body = {k: v for k, v in header.items() if k != "checksum"}
    digest.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        # As raw bytes, so a file with any dtype (bfloat16 too) gets a checksum to refuse.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


# -- encoding -----------------------------------------------------------------------------


def _encode(model: IntegerModel) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and the header (without checksum) of ``model``."""
    graph_module = model.graph_module
    tensors: dict[str, Tensor] = {}
    modules: dict[str, Any] = {}
    nodes = []
    for node in graph_module.graph.nodes:
        nodes.append(encode_node(node))
        if node.op == "call_module" and node.target not in modules:
            target = str(node.target)
            if "." in target:  # to_integer flattens names; a nested module would not rebuild
                raise PackedFormatError(f"module {target!r} is nested; only flat graphs pack")
            module = graph_module.get_submodule(target)
            modules[target] = _encode_module(target, module, tensors)
    candidates = {c for m in modules.values() for c in m.get("candidates", ())}
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "candidates": sorted(candidates),
        "output_scale": float(model.output_scale),
        "layer_inputs": dict(model.layer_inputs),
        "modules": modules,
        "nodes": nodes,
    }
    return tensors, header


def _encode_module(name: str, module: nn.Module, tensors: dict[str, Tensor]) -> dict[str, Any]:
    if isinstance(module, IntegerLayer):
        return _encode_layer(name, module, tensors)
    if isinstance(module, QuantizeInput):
        tensors[f"{name}.step"] = _buffer(module, "step").detach().float().reshape(()).clone()
        return {"kind": "QuantizeInput", "low": module.low, "high": module.high}
    if isinstance(module, Requantize):
        return {"kind": "Requantize", **_dyadic(module), "low": module.low, "high": module.high}
    if isinstance(module, Rescale):
        return {"kind": "Rescale", **_dyadic(module)}
    if isinstance(module, GlobalAvgPool):
        bounds = {"low": module.low, "high": module.high}
        return {"kind": "GlobalAvgPool", **_dyadic(module), "keepdim": module.keepdim, **bounds}
    if isinstance(module, MaxPool):
        sizes = {"kernel": module.kernel, "stride": module.stride, "padding": module.padding}
        return {"kind": "MaxPool", **sizes}
    if isinstance(module, AddLevels):
        multipliers = {"m_a": int(_buffer(module, "m_a")), "m_b": int(_buffer(module, "m_b"))}
        bounds = {"low": module.low, "high": module.high}
        return {
            "kind": "AddLevels",
            **multipliers,
            "shift": int(_buffer(module, "shift")),
            **bounds,
        }
    if isinstance(module, Lookup):
        tensors[f"{name}.table"] = (
            _buffer(module, "table").detach().to(torch.int64).reshape(-1).clone()
        )
        return {"kind": "Lookup", "low": module.low, "function": module.function}
    raise PackedFormatError(f"module {name!r} ({type(module).__name__}) cannot be packed")


def _dyadic(module: nn.Module) -> dict[str, int]:
    return {
        "multiplier": int(_buffer(module, "multiplier")),
        "shift": int(_buffer(module, "shift")),
    }


def _encode_layer(name: str, layer: IntegerLayer, tensors: dict[str, Tensor]) -> dict[str, Any]:
    candidates = [Candidate.parse(s) for s in layer.schemes]
    if len(candidates) > 255:
        raise PackedFormatError(f"layer {name!r}: more than 255 candidates")
    codes = _row_codes(layer)
    weight = _buffer(layer, "weight")
    rows = weight.detach().cpu().reshape(weight.shape[0], -1).numpy()
    tensors[f"{name}.codes"] = torch.from_numpy(codes.astype(np.uint8))
    for code, candidate in enumerate(candidates):
        selected = rows[codes == code]  # ascending row order
        if len(selected):
            packed = pack_levels(selected, candidate)
            tensors[f"{name}.weight.{candidate}"] = torch.from_numpy(packed)
    for field in ("multiplier", "shift", "offset"):
        values = getattr(layer, field).detach().cpu().to(torch.int64).reshape(-1)
        tensors[f"{name}.{field}"] = values.expand(len(codes)).clone()
    residual = int(_buffer(layer, "residual_multiplier")) if layer.has_residual else None
    return {
        "kind": "IntegerLayer",
        "weight_shape": list(_buffer(layer, "weight").shape),
        "candidates": [str(c) for c in candidates],
        "conv": _conv_entry(layer.conv),
        "low": layer.low,
        "high": layer.high,
        "residual_multiplier": residual,
    }


def _conv_entry(conv: dict[str, Any] | None) -> dict[str, Any] | None:
    if conv is None:
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in conv.items()}


def _row_codes(layer: IntegerLayer) -> np.ndarray:
    # The layer keeps its rows grouped by candidate, not the codes themselves.
    codes = np.full(_buffer(layer, "weight").shape[0], -1, dtype=np.int64)
    for scheme, rows, _ in layer.groups:
        codes[rows.numpy()] = layer.schemes.index(scheme)
    if (codes < 0).any():
        raise PackedFormatError("a layer has rows in no candidate group")
    return codes


# -- reading and checking -----------------------------------------------------------------


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    if not path.is_file():
        raise PackedFormatError(f"packed model not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PackedFormatError(f"{path} is not a readable safetensors file ({exc})") from None
    header = _parse_header(path, metadata)
    expected = checksum(header, tensors)
    if header.get("checksum") != expected:
        raise PackedFormatError(
            f"{path}: checksum mismatch (the header or a tensor was edited or corrupted)"
        )
    return header, tensors


def _parse_header(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    what, error = "mixq packed model", PackedFormatError
    header = parse_metadata_header(path, metadata, _HEADER_KEY, FORMAT_NAME, what, error)
    version = header.get("version")
    if version == 1:
        raise PackedFormatError(
            f"{path}: format version 1 holds the integer graph of mixq before the fused-layer "
            "engine; convert the quantised model again and save it with this mixq (version "
            f"{FORMAT_VERSION})"
        )
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise PackedFormatError(
            f"{path}: {'newer' if newer else 'unknown'} format version {version!r} "
            f"(this mixq reads version {FORMAT_VERSION})"
        )
    return header


class _Tensors:
    """The file's tensors, handed out once each with their dtype and shape checked."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.tensors = tensors
        self.used: set[str] = set()

    def take(self, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
        if name not in self.tensors:
            raise PackedFormatError(f"tensor {name!r} is missing")
        tensor = self.tensors[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise PackedFormatError(
                f"tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, expected {dtype} {shape}"
            )
        self.used.add(name)
        return tensor

    def check_all_used(self) -> None:
        extra = sorted(set(self.tensors) - self.used)
        if extra:
            raise PackedFormatError(f"unexpected tensors {extra}")


def _check_range(name: str, values: np.ndarray, low: int, high: int) -> None:
    if values.size and (values.min() < low or values.max() > high):
        raise PackedFormatError(
            f"{name} out of range: [{values.min()}, {values.max()}] not within [{low}, {high}]"
        )


# -- decoding -----------------------------------------------------------------------------


class _Decoder:
    """Rebuilds the graph module from a checked header and its tensors."""

    def __init__(self, header: dict[str, Any], tensors: dict[str, Tensor], engine: Engine) -> None:
        self.header = header
        self.tensors = _Tensors(tensors)
        self.engine = engine
        self.entries = _get(header, "modules", dict)
        self.nodes = _get(header, "nodes", list)

    def build(self) -> IntegerModel:
        for name in self.entries:
            module_name(name)
        graph = decode_graph(self.nodes, set(self.entries))
        built = {
            name: self._module(name, entry)
            for name, entry in self.entries.items()
            if _get(entry, "kind", str) != "IntegerLayer"
        }
        ranges = _layer_input_ranges(graph, self.entries, built)
        root = nn.Module()
        for name, entry in self.entries.items():  # in the file's order, as they were saved
            layer = partial(self._layer, name, entry, ranges)
            module = built[name] if name in built else self._wrap(name, layer)
            root.add_module(name, module)
        self.tensors.check_all_used()
        graph_module = fx.GraphModule(root, graph, class_name="IntegerGraph")
        layer_inputs = _get(self.header, "layer_inputs", dict)
        if not set(layer_inputs.values()) <= set(self.entries):
            raise PackedFormatError(f"layer_inputs {layer_inputs} name unknown modules")
        scale = _get(self.header, "output_scale", (float, int))
        if not (math.isfinite(scale) and scale > 0):
            raise PackedFormatError(f"output_scale {scale!r} is not a positive finite number")
        return IntegerModel(graph_module, float(scale), layer_inputs, self.engine)

    # -- modules --------------------------------------------------------------------------

    @staticmethod
    def _wrap(name: str, make: Callable[[], nn.Module]) -> nn.Module:
        try:
            return make()
        except PackedFormatError as exc:
            raise PackedFormatError(f"module {name!r}: {exc}") from None

    def _module(self, name: str, entry: dict[str, Any]) -> nn.Module:
        kind = _get(entry, "kind", str)
        makers: dict[str, Callable[[], nn.Module]] = {
            "QuantizeInput": lambda: QuantizeInput(self._step(name), *_range(entry)),
            "Requantize": lambda: Requantize(*_dyadic_entry(entry), *_range(entry)),
            "Rescale": lambda: Rescale(*_dyadic_entry(entry)),
            "GlobalAvgPool": lambda: GlobalAvgPool(
                *_dyadic_entry(entry), _get(entry, "keepdim", bool), *_optional_range(entry)
            ),
            "MaxPool": lambda: _max_pool(entry),
            "AddLevels": lambda: _add_levels(entry),
            "Lookup": lambda: self._lookup(name, entry),
        }
        if kind not in makers:
            raise PackedFormatError(f"module {name!r} has unknown kind {kind!r}")
        return self._wrap(name, makers[kind])

    def _step(self, name: str) -> Tensor:
        step = self.tensors.take(f"{name}.step", torch.float32, ())
        if not (torch.isfinite(step) and step > 0):
            raise PackedFormatError(f"step {float(step)!r} is not a positive finite number")
        return step

    def _lookup(self, name: str, entry: dict[str, Any]) -> Lookup:
        function = _get(entry, "function", str)
        if function not in LOOKUP_FUNCTIONS:
            raise PackedFormatError(f"lookup function {function!r} not in {LOOKUP_FUNCTIONS}")
        low = _bounded(entry, "low", -_LEVEL_LIMIT, _LEVEL_LIMIT)
        size = self.tensors.tensors.get(f"{name}.table")
        length = size.numel() if isinstance(size, Tensor) else 0
        if not 0 < length <= _MAX_TABLE:
            raise PackedFormatError(f"lookup table of {length} entries (1..{_MAX_TABLE})")
        table = self.tensors.take(f"{name}.table", torch.int64, (length,))
        _check_range("table", table.numpy(), -_LEVEL_LIMIT, _LEVEL_LIMIT)
        return Lookup(table, low, function)

    def _layer(
        self, name: str, entry: dict[str, Any], ranges: dict[str, tuple[int, int]]
    ) -> IntegerLayer:
        shape = tuple(_get(entry, "weight_shape", list))
        if len(shape) not in (2, 4) or not all(isinstance(s, int) and s > 0 for s in shape):
            raise PackedFormatError(f"weight_shape {list(shape)} is not a linear or conv shape")
        candidates = self._candidates(entry)
        rows = shape[0]
        codes = self.tensors.take(f"{name}.codes", torch.uint8, (rows,)).numpy().astype(np.int64)
        _check_range("codes", codes, 0, len(candidates) - 1)
        values = self._weights(name, shape, codes, candidates)
        multiplier, shift, offset = (
            self.tensors.take(f"{name}.{f}", torch.int64, (rows,)).numpy()
            for f in ("multiplier", "shift", "offset")
        )
        _check_dyadic(multiplier, shift)
        _check_range("offset", offset, -_MAX_OFFSET, _MAX_OFFSET)
        residual = entry.get("residual_multiplier")
        if residual is not None:
            residual = _bounded(entry, "residual_multiplier", 0, 2**MULTIPLIER_BITS)
        low, high = _optional_range(entry)
        # The real step is folded into the multipliers; IntegerLayer never reads it.
        weights = IntegerWeights(values, np.full(rows, np.nan), codes, tuple(candidates))
        conv = _conv(entry.get("conv"), len(shape))
        engine, input_offset = _layer_engine(values, conv, ranges.get(name), self.engine)
        return IntegerLayer(
            weights, conv, multiplier, shift, offset, engine, input_offset,
            low=low, high=high, residual_multiplier=residual,
        )  # fmt: skip

    def _candidates(self, entry: dict[str, Any]) -> list[Candidate]:
        names = _get(entry, "candidates", list)
        known = set(_get(self.header, "candidates", list))
        if not names or not set(names) <= known:
            raise PackedFormatError(f"candidates {names} are not among the file's {known}")
        try:
            return [Candidate.parse(n) for n in names]
        except (MixqError, TypeError, AttributeError) as exc:
            raise PackedFormatError(f"bad candidate in {names}: {exc}") from None

    def _weights(
        self, name: str, shape: tuple[int, ...], codes: np.ndarray, candidates: list[Candidate]
    ) -> Tensor:
        elements = math.prod(shape[1:])
        # Every group's stored bytes are checked against the shape before anything the size
        # of the shape is allocated: a forged huge weight_shape fails here, not in numpy.
        groups = []
        for code, candidate in enumerate(candidates):
            rows = np.flatnonzero(codes == code)
            if len(rows) == 0:
                continue
            count = len(rows) * elements
            size = (packed_bytes(candidate.bits, count),)
            data = self.tensors.take(f"{name}.weight.{candidate}", torch.uint8, size).numpy()
            groups.append((rows, candidate, data, count))
        values = np.zeros((shape[0], elements), dtype=np.int64)
        for rows, candidate, data, count in groups:
            values[rows] = unpack_levels(data, candidate, count).reshape(len(rows), elements)
        return torch.from_numpy(values).reshape(shape)


def _bounded(entry: dict[str, Any], key: str, low: int, high: int) -> int:
    value = _get(entry, key, int)
    if not low <= value <= high:
        raise PackedFormatError(f"{key!r} = {value} is not within [{low}, {high}]")
    return value


def _optional_range(entry: dict[str, Any]) -> tuple[int | None, int | None]:
    """A ``low``/``high`` pair that may be absent together (no clamp)."""
    if entry.get("low") is None and entry.get("high") is None:
        return None, None
    return _range(entry)


def _max_pool(entry: dict[str, Any]) -> MaxPool:
    kernel, stride = _positive(entry, "kernel"), _positive(entry, "stride")
    return MaxPool(kernel, stride, _bounded(entry, "padding", 0, kernel - 1))


def _add_levels(entry: dict[str, Any]) -> AddLevels:
    m_a, m_b = (_bounded(entry, k, 0, 2**MULTIPLIER_BITS) for k in ("m_a", "m_b"))
    return AddLevels(m_a, m_b, _bounded(entry, "shift", 0, MAX_SHIFT), *_range(entry))


def _range(entry: dict[str, Any]) -> tuple[int, int]:
    low, high = (_bounded(entry, k, -_LEVEL_LIMIT, _LEVEL_LIMIT) for k in ("low", "high"))
    if low > high:
        raise PackedFormatError(f"range [{low}, {high}] is empty")
    return low, high


def _dyadic_entry(entry: dict[str, Any]) -> tuple[int, int]:
    multiplier, shift = _get(entry, "multiplier", int), _get(entry, "shift", int)
    _check_dyadic(np.array([multiplier]), np.array([shift]))
    return multiplier, shift


def _check_dyadic(multiplier: np.ndarray, shift: np.ndarray) -> None:
    _check_range("multiplier", multiplier, 0, 2**MULTIPLIER_BITS)
    _check_range("shift", shift, 0, MAX_SHIFT)


def _positive(entry: dict[str, Any], key: str) -> int:
    value = _get(entry, key, int)
    if value < 1:
        raise PackedFormatError(f"{key!r} must be positive, got {value}")
    return value


def _conv(entry: Any, dims: int) -> dict[str, Any] | None:
    if entry is None and dims == 2:
        return None
    if not isinstance(entry, dict) or dims != 4:
        raise PackedFormatError(f"conv parameters {entry!r} do not fit a {dims}-d weight")
    conv = {k: tuple(_get(entry, k, list)) for k in ("stride", "padding", "dilation")}
    if not all(len(v) == 2 and all(isinstance(i, int) for i in v) for v in conv.values()):
        raise PackedFormatError(f"conv parameters {entry!r} are not pairs of integers")
    return {**conv, "groups": _positive(entry, "groups")}


def _layer_input_ranges(
    graph: fx.Graph, entries: dict[str, Any], built: dict[str, nn.Module]
) -> dict[str, tuple[int, int]]:
    """Bounds on each layer's input levels, propagated through the decoded graph from the
    modules that clamp (the int8 engine needs them to shift inputs into int8 safely); a
    layer whose input bound is unknown runs on the reference kernels."""
    ranges: dict[fx.Node, tuple[int, int] | None] = {}
    inputs: dict[str, tuple[int, int] | None] = {}
    for node in graph.nodes:
        ranges[node] = _node_range(node, ranges, entries, built)
        target = str(node.target)
        if node.op == "call_module" and entries[target].get("kind") == "IntegerLayer":
            first = node.args[0] if node.args else None
            found = ranges.get(first) if isinstance(first, fx.Node) else None
            seen = inputs.get(target, found) if target in inputs else found
            inputs[target] = _union(found, seen)
    return {name: r for name, r in inputs.items() if r is not None}


def _union(*ranges: tuple[int, int] | None) -> tuple[int, int] | None:
    if any(r is None for r in ranges):
        return None
    known = [r for r in ranges if r is not None]
    return min(r[0] for r in known), max(r[1] for r in known)


def _node_range(
    node: fx.Node,
    ranges: dict[fx.Node, tuple[int, int] | None],
    entries: dict[str, Any],
    built: dict[str, nn.Module],
) -> tuple[int, int] | None:
    first = node.args[0] if node.args else None
    source = ranges.get(first) if isinstance(first, fx.Node) else None
    if node.op == "call_module":
        return _module_range(entries[str(node.target)], built.get(str(node.target)), source)
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if name in ("clamp", "clip") and len(node.args) == 3:
        low, high = node.args[1:]
        if isinstance(low, int) and isinstance(high, int):
            return (low, high) if source is None else (max(source[0], low), min(source[1], high))
        return None
    if name == "cat" and isinstance(first, list | tuple):
        return _union(*(ranges.get(t) if isinstance(t, fx.Node) else None for t in first))
    if name == "pad":
        return _union(source, (0, 0))
    passthrough = {"flatten", "reshape", "view", "contiguous", "squeeze", "unsqueeze", "getitem"}
    return source if name in passthrough else None


def _module_range(
    entry: dict[str, Any], module: nn.Module | None, source: tuple[int, int] | None
) -> tuple[int, int] | None:
    if isinstance(module, MaxPool):
        return source  # the padding value never wins a window's maximum
    if isinstance(module, Lookup):
        return int(_buffer(module, "table").min()), int(_buffer(module, "table").max())
    bounds = (entry.get("low"), entry.get("high")) if module is None else (
        getattr(module, "low", None), getattr(module, "high", None)
    )  # fmt: skip
    low, high = bounds
    return (low, high) if isinstance(low, int) and isinstance(high, int) else None


def _layer_engine(
    values: Tensor,
    conv: dict[str, Any] | None,
    input_range: tuple[int, int] | None,
    engine: Engine,
) -> tuple[Engine, int]:
    """The engine and int8 input offset :func:`~mixq.integer.compile.to_integer` gives this
    layer (the same rule, :func:`mixq.integer.ops.layer_engine`)."""
    if input_range is None:
        return "reference", 0  # without the input's range, int8 could overflow
    return layer_engine(values, conv, *input_range, engine)
