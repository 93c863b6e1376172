"""A small ONNX graph builder shared by every ONNX exporter (exact integer, QONNX, QDQ):
unique names, initializers, single-output nodes, the graph's input and output, and the
slice, pad, reshape and convolution emitters.

This is the one module that imports the optional ``onnx`` package (the "export" extra):
the exporters take ``onnx``, ``helper`` and ``TensorProto`` from here. Without the extra
they are stand-ins whose every use raises :func:`require_onnx`'s ``ImportError``, so the
exporters import, and fail only when they are used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch.fx.passes.shape_prop import TensorMetadata

from mixq.errors import IntegerConversionError, UnsupportedLayerError

_MISSING_EXTRA = "ONNX export needs onnx and onnxruntime: pip install 'mixq[export]'"


class _MissingExtra:
    """Stands in for ``onnx`` (and its ``helper``, ``numpy_helper``, ``TensorProto``) where
    the "export" extra is not installed: any attribute raises the missing-extra error."""

    def __getattr__(self, name: str) -> Any:
        raise ImportError(_MISSING_EXTRA)


try:  # the optional "export" extra
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    HAVE_ONNX = True
except ImportError:  # pragma: no cover - exercised only without the extra
    onnx = helper = numpy_helper = TensorProto = _MissingExtra()  # type: ignore[assignment,misc]
    HAVE_ONNX = False

OPSET = 17
IR_VERSION = 8  # opset 17's IR, so onnxruntime >= 1.13 loads the files
INPUT_NAME = "input"
OUTPUT_NAME = "output"
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


def require_onnx() -> None:
    """Raise ``ImportError`` (naming the extra) where ``onnx`` is not installed."""
    if not HAVE_ONNX:
        raise ImportError(_MISSING_EXTRA)


def save_checked(proto: Any, path: str | Path) -> Path:
    """Check ``proto`` with onnx's checker, then write it to ``path``; returns the path."""
    onnx.checker.check_model(proto)
    path = Path(path)
    onnx.save(proto, str(path))
    return path


class OnnxGraph:
    """Nodes and initializers of an ONNX graph under construction, with unique names."""

    def __init__(self) -> None:
        require_onnx()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = set()

    def fresh(self, base: str) -> str:
        name, index = base, 1
        while name in self._names:
            index += 1
            name = f"{base}_{index}"
        self._names.add(name)
        return name

    def constant(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], base: str, domain: str = "", **attrs: Any) -> str:
        """Add one single-output node; returns the output's name."""
        out = self.fresh(f"{base}/{op_type}")
        node = helper.make_node(op_type, inputs, [out], name=out, domain=domain or None, **attrs)
        self.nodes.append(node)
        return out

    def input_value(self, elem_type: int, dims: list[int | str]) -> Any:
        """The value info of the graph's one input, ``INPUT_NAME``."""
        return helper.make_tensor_value_info(INPUT_NAME, elem_type, dims)

    def output_value(self, x: str, elem_type: int, dims: list[int | str]) -> Any:
        """``x`` as the graph's one output, ``OUTPUT_NAME`` (an Identity); its value info."""
        self.nodes.append(helper.make_node("Identity", [x], [OUTPUT_NAME], name="output"))
        return helper.make_tensor_value_info(OUTPUT_NAME, elem_type, dims)

    def model(
        self,
        inputs: list[Any],
        outputs: list[Any],
        opsets: dict[str, int],
        doc: str,
        metadata: dict[str, str],
        ir_version: int = IR_VERSION,
    ) -> Any:
        graph = helper.make_graph(self.nodes, "mixq", inputs, outputs, self.initializers)
        imports = [helper.make_opsetid(domain, version) for domain, version in opsets.items()]
        model = helper.make_model(graph, opset_imports=imports, producer_name="mixq")
        model.ir_version = ir_version
        model.doc_string = doc
        helper.set_model_props(model, metadata)
        return model


def tensor_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The shape ShapeProp recorded for a node, or None where its value is not a tensor."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def emit_slice(graph: OnnxGraph, x: str, index: Any, rank: int, base: str) -> str:
    """``x[index]`` for an index of slices with positive steps (and ``...``)."""
    items = index if isinstance(index, tuple) else (index,)
    if any(item is Ellipsis for item in items):
        at = items.index(Ellipsis)
        fill = (slice(None),) * (rank - len(items) + 1)
        items = items[:at] + fill + items[at + 1 :]
    if not all(isinstance(item, slice) for item in items) or len(items) > rank:
        raise IntegerConversionError(f"{base}: only slicing with slices exports, not {index!r}")
    starts, ends, axes, steps = [], [], [], []
    for axis, item in enumerate(items):
        if item == slice(None):
            continue
        step = 1 if item.step is None else int(item.step)
        if step <= 0:
            raise IntegerConversionError(f"{base}: slices with step {step} do not export")
        starts.append(0 if item.start is None else int(item.start))
        ends.append(INT64_MAX if item.stop is None else int(item.stop))
        axes.append(axis)
        steps.append(step)
    if not axes:
        return x
    constants = [
        graph.constant(f"{base}/{what}", np.array(values, dtype=np.int64))
        for what, values in (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps))
    ]
    return graph.op("Slice", [x, *constants], base)


def emit_pad(
    graph: OnnxGraph, x: str, pad: list[int] | tuple[int, ...], rank: int, base: str
) -> str:
    """``F.pad(x, pad)`` with zeros: torch lists (begin, end) pairs from the last axis back."""
    begins, ends = [0] * rank, [0] * rank
    for pair in range(len(pad) // 2):
        begins[rank - 1 - pair] = int(pad[2 * pair])
        ends[rank - 1 - pair] = int(pad[2 * pair + 1])
    pads = graph.constant(f"{base}/pads", np.array(begins + ends, dtype=np.int64))
    return graph.op("Pad", [x, pads], base)  # no constant_value: zero of x's type


def int_list(arg: object, what: str, base: str) -> list[int]:
    """An fx node argument that must be a list or tuple of ints (a pad, a permutation)."""
    items = list(arg) if isinstance(arg, list | tuple) else None
    values = [v for v in items if isinstance(v, int)] if items is not None else []
    if items is None or len(values) != len(items):
        raise IntegerConversionError(f"{base}: {what} must be a list of ints, not {arg!r}")
    return values


def emit_reshape(graph: OnnxGraph, x: str, shape: tuple[int, ...], base: str) -> str:
    """Reshape to ``shape`` (from ShapeProp) with dim 0 as -1, so any batch size runs."""
    target = list(shape)
    if target:
        target[0] = -1  # the batch folds into the first dimension, as in every reshape here
    shape_name = graph.constant(f"{base}/shape", np.array(target, dtype=np.int64))
    return graph.op("Reshape", [x, shape_name], base)


# Shape-only fx targets both exporters turn into ONNX Reshape.
RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}
RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze)


def emit_conv(graph: OnnxGraph, inputs: list[str], conv: torch.nn.Conv2d, base: str) -> str:
    """A float ``Conv`` node with ``conv``'s geometry (explicit zero padding only)."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise UnsupportedLayerError(
            f"layer {base!r}: the ONNX export supports explicit zero padding, not "
            f"{conv.padding!r}/{conv.padding_mode!r}"
        )
    pad_h, pad_w = (int(p) for p in conv.padding)
    return graph.op(
        "Conv",
        inputs,
        base,
        kernel_shape=[int(k) for k in conv.kernel_size],
        strides=[int(s) for s in conv.stride],
        pads=[pad_h, pad_w, pad_h, pad_w],
        dilations=[int(d) for d in conv.dilation],
        group=int(conv.groups),
    )
