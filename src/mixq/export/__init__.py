"""Deployment formats of a quantised model.

Which format for what:

- **packed** (:mod:`mixq.export.packed`): the integer model at its bit width in one
  safetensors file; :func:`~mixq.export.packed.load_packed` rebuilds it without the float
  model, bit-identical. For shipping a model to be run by mixq's own engines.
- **exact integer ONNX** (:mod:`mixq.export.onnx_integer`): the integer model in standard
  ONNX ops (``ConvInteger``/``MatMulInteger``, int64 dyadic requantisation); any ONNX
  runtime computes exactly mixq's integers. For checking an integer runtime or hardware
  against mixq, not for speed.
- **QDQ ONNX** (:mod:`mixq.export.qdq`): ``QuantizeLinear``/``DequantizeLinear`` around
  ``Conv``/``Gemm`` with int8 per-channel weights, the pattern onnxruntime, TensorRT and
  OpenVINO fuse into int8 kernels. For fast deployment; the runtime requantises in float,
  so a few predictions may differ from mixq's integer engine.
- **QONNX** (:mod:`mixq.export.qonnx`): FINN's ``Quant`` nodes, for FPGA flows; uniform
  (``fixed-k``) layers only.

Submodules: :mod:`~mixq.export.onnx_graph` (the ONNX graph builder the three ONNX
exporters share, and the one import of the optional ``onnx``),
:mod:`~mixq.export.fx_walk` (the node-by-node walk of an fx graph they share),
:mod:`~mixq.export.fake_quant_graph` (the fake-quantised model in float ONNX ops, the base
of QONNX and QDQ), :mod:`~mixq.export.intervals` (the exact interval analysis of the integer
ONNX graph), :mod:`~mixq.export.onnx_runtime` (running files with onnxruntime),
:mod:`~mixq.export.bits` (bit packing of weight levels),
:mod:`~mixq.export.fx_encoding` (the packed file's fx graph as JSON, validated on reading).
"""

from __future__ import annotations

from typing import Any

# The exporters import onnx; they load on first use, so ``import mixq.export`` stays light.
_LAZY = {
    "export_onnx": "mixq.export.onnx_integer",
    "export_qdq": "mixq.export.qdq",
    "export_qonnx": "mixq.export.qonnx",
    "load_packed": "mixq.export.packed",
    "save_packed": "mixq.export.packed",
    "run_onnx": "mixq.export.onnx_runtime",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'mixq.export' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
