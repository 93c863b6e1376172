"""The exact evaluation mode: the deployed model's value, fake-quant's gradient, rebuilt
when the parameters change; ``to_integer``'s fast engine and its fallback."""

from __future__ import annotations

import contextlib

import pytest
import torch
from _integer_models import batches, quantize, residual_net

from mixq.errors import DataError
from mixq.integer import evaluate_exact, exact_model, to_integer


@pytest.fixture(scope="module")
def qnet_and_data() -> tuple[torch.nn.Module, list[torch.Tensor]]:
    data = batches((8, 3, 16, 16))
    return quantize(residual_net(), "rmsmp", data), data


def test_training_value_is_exact_and_gradient_is_fake_quants(qnet_and_data) -> None:
    qnet, data = qnet_and_data
    exact = exact_model(qnet, data[0], engine="reference").train()
    qnet.eval()  # frozen BN and quantisers: only the straight-through path differs
    out = exact(data[1])
    deployed = to_integer(qnet, data[0])(data[1])
    assert torch.equal(out.detach(), deployed)
    out.sum().backward()
    grad = qnet.linear.weight.grad.clone()
    qnet.zero_grad()
    qnet(data[1]).sum().backward()
    assert torch.equal(grad, qnet.linear.weight.grad) and float(grad.abs().sum()) > 0
    qnet.zero_grad()


def test_the_integer_model_is_rebuilt_after_a_parameter_changes(qnet_and_data) -> None:
    qnet, data = qnet_and_data
    exact = exact_model(qnet, data[0]).eval()
    first = exact.integer_model()
    assert exact.integer_model() is first  # nothing changed: no rebuild
    with torch.no_grad():
        qnet.linear.bias.add_(1.0)
    try:
        assert exact.integer_model() is not first
        assert torch.equal(exact(data[2]), to_integer(qnet, data[0])(data[2]))
    finally:
        with torch.no_grad():
            qnet.linear.bias.sub_(1.0)


def test_evaluate_exact_counts_the_deployed_predictions(qnet_and_data) -> None:
    qnet, data = qnet_and_data
    labels = [torch.arange(8) % 10 for _ in data]
    result = evaluate_exact(qnet, list(zip(data, labels, strict=True)))
    inet = to_integer(qnet, data[0], engine="int8")
    correct = sum(int((inet(x).argmax(1) == y).sum()) for x, y in zip(data, labels, strict=True))
    assert (result.correct, result.images) == (correct, 24)
    assert result.top1 == correct / 24
    with pytest.raises(DataError):
        evaluate_exact(qnet, [])


def test_the_fast_engine_gives_the_reference_integers(qnet_and_data) -> None:
    qnet, data = qnet_and_data
    reference = to_integer(qnet, data[0])
    with (
        pytest.warns(RuntimeWarning, match="fast engine")
        if _fast_missing()
        else contextlib.nullcontext()
    ):
        fast = to_integer(qnet, data[0], engine="fast")
    for x in data:
        assert torch.equal(fast.forward_integer(x), reference.forward_integer(x))


def _fast_missing() -> bool:
    try:
        from mixq.integer.fast import lower  # noqa: F401
    except ImportError:
        return True
    return False
