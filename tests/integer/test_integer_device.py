"""Models follow ``.to(device)`` whole: no tensor of a quantised, integer or exact-mode model
stays behind on the CPU (checked on the ``meta`` device here, which needs no GPU), and on
CUDA, where there is one, they compute what they compute on the CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _integer_models import batches, quantize, tiny_resnet
from torch import Tensor, nn

import mixq
from mixq.integer import exact_model


def _tensors_elsewhere(root: nn.Module, device: str) -> list[str]:
    """Every tensor a module holds outside its parameters and buffers (plain attributes,
    lists, tuples, dicts of them) that is not on ``device``."""
    found = []
    for name, module in root.named_modules():
        for attr, value in vars(module).items():
            if attr in ("_parameters", "_buffers", "_modules"):
                continue
            stack: list[tuple[str, Any]] = [(attr, value)]
            while stack:
                path, item = stack.pop()
                if isinstance(item, Tensor):
                    if item.device.type != device:
                        found.append(f"{name}.{path}")
                elif isinstance(item, list | tuple):
                    stack += [(f"{path}[{i}]", x) for i, x in enumerate(item)]
                elif isinstance(item, dict):
                    stack += [(f"{path}[{k!r}]", x) for k, x in item.items()]
    tensors = [*root.parameters(), *root.buffers()]
    return found + [
        f"parameter or buffer on {t.device}" for t in tensors if t.device.type != device
    ]


@pytest.fixture(scope="module")
def quantized() -> tuple[nn.Module, list[Tensor]]:
    data = batches((4, 3, 16, 16))
    return quantize(tiny_resnet(), "rmsmp", data), data


@pytest.mark.parametrize("kind", ["fake-quant", "reference", "int8", "exact"])
def test_every_tensor_follows_the_model_to_another_device(quantized: tuple, kind: str) -> None:
    qnet, data = quantized
    model: nn.Module
    if kind == "fake-quant":
        model = quantize(tiny_resnet(), "rmsmp", data)
    elif kind == "exact":
        model = exact_model(quantize(tiny_resnet(), "rmsmp", data), data[0])
    else:
        model = mixq.to_integer(qnet, data[0], engine=kind)  # type: ignore[arg-type]
    assert _tensors_elsewhere(model, "cpu") == []
    assert _tensors_elsewhere(model.to("meta"), "meta") == []


def test_moving_keeps_the_integers_and_their_types(quantized: tuple) -> None:
    qnet, data = quantized
    inet = mixq.to_integer(qnet, data[0], engine="int8")
    expected = inet.forward_integer(data[1])
    layer = next(m for m in inet.modules() if type(m).__name__ == "IntegerLayer")
    dtypes = (layer._float_weight.dtype, layer._single_weight.dtype, layer.int8_weight.dtype)
    inet.to("cpu", torch.float16)  # a dtype cast must not round the integer arithmetic
    assert (layer._float_weight.dtype, layer._single_weight.dtype) == dtypes[:2]
    assert layer.int8_weight.dtype == dtypes[2]
    assert torch.equal(inet.forward_integer(data[1]), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_models_compute_what_they_compute_on_the_cpu(quantized: tuple) -> None:
    qnet, data = quantized
    inet = mixq.to_integer(qnet, data[0], engine="reference")
    expected_levels = inet.forward_integer(data[1])
    with torch.no_grad():
        expected_float = qnet(data[1])
    x = data[1].cuda()
    assert torch.equal(inet.cuda().forward_integer(x).cpu(), expected_levels)
    with torch.no_grad():
        got = qnet.cuda()(x).cpu()
    torch.testing.assert_close(got, expected_float, rtol=1e-4, atol=1e-4)
