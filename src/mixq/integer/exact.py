"""The integer-exact evaluation mode of a quantised model: what a user evaluates is what
:func:`~mixq.integer.to_integer` deploys.

:func:`exact_model` wraps a quantised model so that its forward *value* is the integer
model's output (every requantisation dyadic, every tensor a quantiser's levels, exactly as
the deployed model computes it) while its gradient is the fake-quantised model's (a
straight-through estimator), so the last epochs of fine-tuning can see the deployed
arithmetic. :func:`evaluate_exact` is the deployed model's top-1 on labelled batches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mixq.errors import DataError
from mixq.integer.compile import IntegerModel, to_integer

ExactEngine = Literal["reference", "int8", "fast"]


class ExactModel(nn.Module):
    """A quantised model whose forward returns the integer model's logits.

    The integer model is rebuilt whenever a parameter or buffer of the quantised model
    changed in place (an optimiser step, a calibration) since it was built. In training
    mode the output is ``fake + (exact - fake).detach()``: the exact value, the
    fake-quantised model's gradient.
    """

    def __init__(
        self, quantized: nn.Module, example_input: Tensor, *, engine: ExactEngine = "int8"
    ) -> None:
        super().__init__()
        self.quantized = quantized
        # A buffer (not saved): it follows the model's device, as the tracing needs.
        self.example_input: Tensor
        self.register_buffer("example_input", example_input[:1].detach().clone(), persistent=False)
        self.engine: ExactEngine = engine
        self._integer: IntegerModel | None = None
        self._built_for: tuple[int, ...] = ()

    def integer_model(self) -> IntegerModel:
        """The integer model of the quantised model's current parameters."""
        version = tuple(
            t._version for t in (*self.quantized.parameters(), *self.quantized.buffers())
        )
        if self._integer is None or version != self._built_for:
            self._integer = to_integer(self.quantized, self.example_input, engine=self.engine)
            self._built_for = version
        return self._integer

    def forward(self, x: Tensor) -> Tensor:
        exact = self.integer_model()(x)
        if not (self.training and torch.is_grad_enabled()):
            return exact
        fake = self.quantized(x)
        return fake + (exact.to(fake.dtype) - fake).detach()


def exact_model(
    quantized: nn.Module, example_input: Tensor, *, engine: ExactEngine = "int8"
) -> ExactModel:
    """The integer-exact evaluation (and straight-through fine-tuning) mode of a quantised
    model (from :func:`mixq.quantize`, calibrated).

    >>> import torch, mixq
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    >>> data = [torch.randn(4, 3, 6, 6) for _ in range(2)]
    >>> qnet = mixq.quantize(net.eval(), "rmsmp", calibration_data=data, progress=False)
    >>> exact = mixq.integer.exact_model(qnet, data[0]).eval()
    >>> deployed = mixq.to_integer(qnet, data[0])
    >>> torch.equal(exact(data[1]), deployed(data[1]))
    True
    """
    return ExactModel(quantized, example_input, engine=engine)


@dataclass(frozen=True)
class ExactEvaluation:
    """Top-1 of the deployed integer model and how many predictions the fake-quantised
    model makes differently."""

    correct: int
    images: int
    fake_quant_disagreements: int

    @property
    def top1(self) -> float:
        return self.correct / max(self.images, 1)


@torch.no_grad()
def evaluate_exact(
    quantized: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    engine: ExactEngine = "int8",
    integer: IntegerModel | None = None,
) -> ExactEvaluation:
    """Evaluate the model ``to_integer`` deploys on ``(images, labels)`` batches.

    ``integer`` reuses an integer model already built from ``quantized``.
    """
    correct = images = differ = 0
    quantized.eval()
    for x, labels in batches:
        if integer is None:
            integer = to_integer(quantized, x[:1], engine=engine)
        predicted = integer.forward_integer(x).argmax(-1)
        correct += int((predicted == labels).sum())
        differ += int((predicted != quantized(x).argmax(-1)).sum())
        images += int(labels.numel())
    if images == 0:
        raise DataError("evaluate_exact got no images")
    return ExactEvaluation(correct, images, differ)
