"""The integer model against the fake-quantised model it comes from, on every scheme."""

from __future__ import annotations

import pytest
import torch
from _integer_models import batches, quantize, residual_net, small_cnn, tiny_resnet
from torch import nn

import mixq
from mixq.errors import IntegerConversionError, UnsupportedLayerError
from mixq.integer import exact_model, to_integer
from mixq.integer.agreement import compare_layers
from mixq.integer.ops import IntegerLayer
from mixq.recipe import Recipe

# Every scheme at every bit width whose integers fit: PoT-6 and wider have levels down to
# 2^-30 of the clip (tested apart); SP2 stops at 8 bits.
CANDIDATES = [
    *(f"fixed-{b}" for b in range(2, 9)),
    *(f"pot-{b}" for b in range(2, 6)),
    *(f"sp2-{b}" for b in range(3, 9)),
]
IMAGES = (16, 3, 16, 16)


def _uniform(candidate: str, act_bits: int) -> Recipe:
    return Recipe.from_dict({"default": {"ratio": {candidate: 1.0}, "act_bits": act_bits}})


def _check_agreement(qnet: nn.Module, data: list[torch.Tensor], *, residual: bool = False) -> None:
    inet = to_integer(qnet, data[0])
    fast = to_integer(qnet, data[0], engine="int8")
    exact = exact_model(qnet, data[0], engine="reference").eval()
    for x in data:
        integers = inet.forward_integer(x)
        assert torch.equal(integers, fast.forward_integer(x))
        assert torch.equal(exact(x), inet(x))  # what is evaluated is what is deployed
    # Against float fake-quant (not the deployed arithmetic: it averages before rounding
    # and adds float shortcuts), each layer fed fake-quant's levels stays within a level
    # or, after a quantised shortcut, a few.
    forced = compare_layers(qnet, inet, data)
    assert all(layer.max_abs_diff <= (4 if residual else 1) for layer in forced), forced
    elements = sum(layer.elements for layer in forced)
    assert sum(layer.mismatches for layer in forced) <= 0.05 * elements, forced
    agree = [float((inet(x).argmax(1) == qnet(x).argmax(1)).float().mean()) for x in data]
    assert min(agree) >= 0.9, agree


@pytest.mark.parametrize("candidate", CANDIDATES)
@pytest.mark.parametrize("act_bits", [4, 8])
def test_every_scheme_agrees_with_fake_quantisation(candidate: str, act_bits: int) -> None:
    data = batches(IMAGES)
    _check_agreement(quantize(small_cnn(), _uniform(candidate, act_bits), data), data)


@pytest.mark.parametrize("recipe", ["rmsmp", "msp"])
def test_mixed_rows_and_residual_blocks_agree(recipe: str) -> None:
    data = batches(IMAGES)
    qnet = quantize(residual_net(), Recipe.preset(recipe, act_bits=4), data)
    _check_agreement(qnet, data, residual=True)


def test_a_whole_cifar_resnet_agrees() -> None:
    data = batches((8, 3, 32, 32), count=2)
    _check_agreement(quantize(tiny_resnet(), "rmsmp", data), data, residual=True)


def test_rows_run_grouped_by_scheme_with_shift_add() -> None:
    data = batches(IMAGES)
    inet = to_integer(quantize(residual_net(), Recipe.preset("rmsmp", act_bits=4), data), data[0])
    layers = [m for m in inet.modules() if isinstance(m, IntegerLayer)]
    mixed = next(layer for layer in layers if len(layer.groups) == 3)
    terms = {name: len(group_terms) for name, _, group_terms in mixed.groups}
    assert terms["fixed-4"] == 1 and terms["fixed-8"] == 1  # one integer multiply
    assert 2 <= terms["sp2-4"] <= 4  # SP2-4 integers 1..8 use bits 0..3: shifts, then adds
    # One convolution for every row gives the accumulators the shift-adds give.
    levels = torch.randint(0, 16, (2, mixed.weight.shape[1], 6, 6))
    assert torch.equal(mixed.accumulate(levels), mixed.accumulate_shift_add(levels))


def test_every_tensor_inside_is_an_int32_range_integer() -> None:
    data = batches(IMAGES)
    inet = to_integer(quantize(residual_net(), "rmsmp", data), data[0])
    seen: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.append(out))
        for name, m in inet.graph_module.named_modules()
        if name and not name.endswith("input")
    ]
    inet.forward_integer(data[1])
    for hook in hooks:
        hook.remove()
    assert seen and all(t.dtype == torch.int64 for t in seen)
    assert max(int(t.abs().max()) for t in seen) < 2**31


def test_depthwise_conv_and_sequence_linear() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, groups=8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()
    data = batches(IMAGES)
    _check_agreement(quantize(net, Recipe.preset("rmsmp", first_last=None), data), data)
    mlp = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 6)).eval()
    tokens = batches((4, 7, 12))
    qmlp = quantize(mlp, Recipe.preset("msp", first_last=None), tokens)
    inet = to_integer(qmlp, tokens[0])
    assert inet(tokens[1]).shape == (4, 7, 6)
    assert all(layer.max_abs_diff <= 1 for layer in compare_layers(qmlp, inet, tokens))


def test_every_unsupported_operation_is_named_in_one_error() -> None:
    net = nn.Sequential(
        nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)
    ).eval()
    data = batches((8, 4))
    with pytest.raises(UnsupportedLayerError, match=r"2 op.*'1' \(GELU\).*'3' \(Tanh\)"):
        to_integer(quantize(net, "fixed8", data), data[0])


def test_float_inputs_and_unquantised_models_are_refused() -> None:
    data = batches(IMAGES)
    recipe = Recipe.from_dict({"default": {"ratio": {"fixed-4": 1.0}, "act_bits": 0}})
    with pytest.raises(IntegerConversionError, match="float input"):
        to_integer(quantize(small_cnn(), recipe, data), data[0])
    with pytest.raises(IntegerConversionError, match="no quantised layer"):
        to_integer(small_cnn(), data[0])
    qnet = quantize(small_cnn(), "rmsmp", data)
    with pytest.raises(IntegerConversionError, match="unknown engine"):
        to_integer(qnet, data[0], engine="float")
    uncalibrated = mixq.quantize(small_cnn(), "rmsmp", progress=False)
    with pytest.raises(IntegerConversionError, match="not calibrated"):
        to_integer(uncalibrated, data[0])
    mixq.set_quantization(qnet, activations=False)
    with pytest.raises(IntegerConversionError, match="input quantiser switched off"):
        to_integer(qnet, data[0])


def test_the_float_model_is_untouched_and_outputs_are_close() -> None:
    data = batches(IMAGES)
    qnet = quantize(residual_net(), "rmsmp", data)
    with torch.no_grad():
        before = qnet(data[1])
        inet = to_integer(qnet, data[0])
        assert torch.equal(qnet(data[1]), before)
    # One output step of the last layer's levels bounds the free-running difference here.
    assert float((inet(data[1]) - before).abs().max()) < 0.05 * float(before.abs().max())


@pytest.mark.parametrize("candidate", ["pot-6", "pot-7", "pot-8"])
def test_pot_grids_too_fine_for_int32_are_refused(candidate: str) -> None:
    data = batches(IMAGES)
    qnet = quantize(small_cnn(), _uniform(candidate, 4), data)
    with pytest.raises(IntegerConversionError, match=r"int32|31 bits"):
        to_integer(qnet, data[0])
