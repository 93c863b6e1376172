"""Running exported ONNX files with onnxruntime on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    import onnxruntime


def onnx_session(path: str | Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session for an exported file (``threads``: intra-op threads)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def run_onnx(model: str | Path | onnxruntime.InferenceSession, x: Tensor) -> Tensor:
    """Run an exported file (or a session from :func:`onnx_session`) on ``x``; returns the
    output tensor (int64 for :func:`export_onnx` files)."""
    session = model if not isinstance(model, str | Path) else onnx_session(model)
    feed = {session.get_inputs()[0].name: x.detach().cpu().float().numpy()}
    (out,) = session.run(None, feed)
    return torch.from_numpy(np.asarray(out))
