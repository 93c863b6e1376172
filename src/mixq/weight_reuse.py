"""Quantising each weight once while it stays the same: calibration and rounding passes.

Calibration and GPTQ's rounding run several batches through a model whose weights do not
change between batches, and every batch fake-quantises every weight again: on a BERT-type
encoder that is most of a calibration pass. Inside :class:`ReusedWeightQuantization`,
each row-wise weight quantiser keeps its last output and returns it again while its input
is the same tensor, unchanged (same storage and version counter, the previous input kept
alive so that its memory cannot be reused), and its clip levels and rows are unchanged.
The output is the quantiser's own, so everything downstream sees the same values bit for
bit. A weight written in place (``copy_``) is seen; one written through ``.data`` is not,
as ``.data`` has its own version counter: nothing inside the block may do that.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from mixq.nn.weight_quant import RowWeightQuantizer

__all__ = ["ReusedWeightQuantization"]


class ReusedWeightQuantization:
    """Within the ``with`` block, each weight quantiser of ``model`` computes its output
    once per unchanged input, in no-grad mode (with gradients it computes as usual).

    Memory: one kept output per quantiser (a float copy of the weights) until the block
    ends or :meth:`forget` is called.

    >>> from mixq.assignment import RowAssignment
    >>> layer = nn.Module()
    >>> layer.weight_quant = RowWeightQuantizer(RowAssignment.uniform("fixed-4", 2), 3)
    >>> w = torch.randn(2, 3)
    >>> with ReusedWeightQuantization(layer), torch.no_grad():
    ...     first, again = layer.weight_quant(w), layer.weight_quant(w)
    >>> again is first
    True
    """

    def __init__(self, model: nn.Module) -> None:
        self._kept: list[_KeptOutput] = []
        self._model = model

    def __enter__(self) -> ReusedWeightQuantization:
        for module in self._model.modules():
            # Exactly the row-wise quantiser (a subclass may compute otherwise), and not one
            # already reusing (nested blocks).
            if type(module) is RowWeightQuantizer and "forward" not in module.__dict__:
                kept = _KeptOutput(module)
                module.__dict__["forward"] = kept
                self._kept.append(kept)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for kept in self._kept:
            kept.quantizer.__dict__.pop("forward", None)
        self._kept = []

    def forget(self) -> None:
        """Drop every kept output (their memory), keeping the reuse on."""
        for kept in self._kept:
            kept.clear()


class _KeptOutput:
    """One quantiser's last input, the state it was computed with, and its output."""

    def __init__(self, quantizer: RowWeightQuantizer) -> None:
        self.quantizer = quantizer
        self.clear()

    def clear(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.source: Tensor | None = None
        self.output: Tensor | None = None

    def __call__(self, w_rows: Tensor) -> Tensor:
        key = self._key(w_rows)
        if key is not None and key == self.key and self.output is not None:
            return self.output
        output = RowWeightQuantizer.forward(self.quantizer, w_rows)
        if key is None:
            self.clear()
        else:
            self.key, self.source, self.output = key, w_rows, output
        return output

    def _key(self, w_rows: Tensor) -> tuple[Any, ...] | None:
        """What the output depends on, or None where reuse would not be safe."""
        q = self.quantizer
        state = (w_rows, q.alpha, q.row_codes)
        if torch.is_grad_enabled() or any(t.is_inference() for t in state):
            return None
        return (
            *(_identity(t) for t in state),
            id(q.alpha),
            id(q.row_codes),
            id(q.candidates),
            q.enabled,
            q.elements_per_row,
        )


def _identity(t: Tensor) -> tuple[Any, ...]:
    """Where a tensor's values live and how often they were written in place."""
    return (t.data_ptr(), t.storage_offset(), t.shape, t.stride(), t.dtype, t.device, t._version)
