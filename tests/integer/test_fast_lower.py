"""``lower``: whole integer models on the fast kernels give the reference engine's integers,
on every instruction set this CPU has."""

from __future__ import annotations

import pytest
import torch
from _integer_models import batches, quantize, residual_net, small_cnn, tiny_resnet
from torch import nn

import mixq
from mixq.errors import FastEngineUnavailableError, IntegerConversionError
from mixq.recipe import Recipe

try:
    from mixq.integer.fast import FastIntegerModel, kernels, lower, set_isa, supported_isas

    kernels()
    ISAS = supported_isas()
except FastEngineUnavailableError as exc:  # no compiler: the engines fall back
    pytest.skip(f"fast kernels unavailable: {exc}", allow_module_level=True)

IMAGES = (6, 3, 16, 16)


def _depthwise_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU6(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(8, 12, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 5),
    ).eval()


MODELS = {
    "small_cnn": (small_cnn, "rmsmp", 4),
    "residual_net": (residual_net, "msp", 8),
    "tiny_resnet": (tiny_resnet, "rmsmp", 4),
    "depthwise": (_depthwise_net, "sp2-4", 8),
}


@pytest.fixture(scope="module", params=list(MODELS))
def converted(request: pytest.FixtureRequest) -> tuple[mixq.integer.IntegerModel, list]:
    build, preset, act_bits = MODELS[request.param]
    data = batches(IMAGES)
    qnet = quantize(build(), Recipe.preset(preset, act_bits=act_bits), data)
    return mixq.to_integer(qnet, data[0]), data


@pytest.mark.parametrize("isa", ISAS)
def test_lowered_models_give_the_reference_integers(converted: tuple, isa: str) -> None:
    reference, data = converted
    fast = lower(reference)
    set_isa(isa)
    try:
        for x in [*data, data[0][:1]]:
            expected = reference.forward_integer(x)
            got = fast.forward_integer(x)
            assert got.dtype == torch.int64
            assert torch.equal(got, expected)
    finally:
        set_isa(None)
    assert torch.equal(fast(data[1]), reference(data[1]))  # the float exit too


def test_residual_sums_requantise_in_the_layer_epilogue() -> None:
    data = batches((4, 3, 16, 16))
    qnet = quantize(tiny_resnet(), Recipe.preset("rmsmp", act_bits=4), data)
    reference = mixq.to_integer(qnet, data[0])
    fast = lower(reference)
    targets = [n.target for n in fast.graph_module.graph.nodes if n.op == "call_module"]
    reference_targets = [
        n.target for n in reference.graph_module.graph.nodes if n.op == "call_module"
    ]
    # Every Requantize after a layer went into that layer's epilogue.
    assert len(targets) < len(reference_targets)
    assert not any("conv1_input" in str(t) and str(t) != "conv1_input" for t in targets)
    assert torch.equal(fast.forward_integer(data[1]), reference.forward_integer(data[1]))


def test_to_integer_routes_the_fast_engine_here() -> None:
    data = batches(IMAGES)
    qnet = quantize(small_cnn(), "rmsmp", data)
    fast = mixq.to_integer(qnet, data[0], engine="fast")
    assert isinstance(fast, FastIntegerModel) and fast.engine == "fast"
    reference = mixq.to_integer(qnet, data[0])
    assert torch.equal(fast.forward_integer(data[2]), reference.forward_integer(data[2]))


def test_lower_refuses_what_is_not_an_integer_model() -> None:
    with pytest.raises(IntegerConversionError, match="IntegerModel"):
        lower(nn.Linear(2, 2))  # type: ignore[arg-type]
