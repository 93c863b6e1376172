"""QuantConv2d (BN folding, grouped, depthwise, BN training) and QuantLinear."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mixq
from mixq.assignment import RowAssignment
from mixq.errors import SchemeError
from mixq.fakequant import fake_quant_rows
from mixq.nn.layers import QuantConv2d, QuantLinear


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_bn(channels: int, seed: int = 0, affine: bool = True) -> nn.BatchNorm2d:
    g = _gen(seed)
    bn = nn.BatchNorm2d(channels, affine=affine)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=g) * 0.5)
        bn.running_var.copy_(torch.rand(channels, generator=g) * 2 + 0.1)
        if affine:
            bn.weight.copy_(torch.randn(channels, generator=g))
            bn.bias.copy_(torch.randn(channels, generator=g))
    return bn.eval()


def _mixed(rows: int, seed: int = 0) -> RowAssignment:
    names = ("sp2-4", "fixed-4", "fixed-8", "pot-4")
    codes = np.random.default_rng(seed).integers(0, len(names), rows)
    return RowAssignment(names, codes)


def _calibrate(layer: nn.Module, x: torch.Tensor) -> None:
    mixq.calibrate(layer, [x], progress=False)


def _row_reference(weight: torch.Tensor, layer: QuantConv2d | QuantLinear) -> torch.Tensor:
    """The weight quantised row by row with each row's candidate and clip level."""
    rows = weight.reshape(weight.shape[0], -1)
    alpha = layer.weight_quant.alpha.detach()
    out = torch.cat(
        [
            fake_quant_rows(rows[r : r + 1], alpha[r : r + 1], c)
            for r, c in enumerate(layer.assignment.row_candidates())
        ]
    )
    return out.reshape(weight.shape)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_folded_bn_equals_conv_then_bn_in_float(bias: bool, affine: bool) -> None:
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=bias)
    bn = _random_bn(6, affine=affine)
    reference = nn.Sequential(conv, bn).eval()
    layer = QuantConv2d.from_float(conv, _mixed(6), bn=copy.deepcopy(bn)).eval()
    x = torch.randn(3, 4, 9, 9, generator=_gen(1))
    mixq.set_quantization(layer, weights=False, activations=False)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference(x), rtol=1e-5, atol=1e-5)
    weight, folded_bias = layer.effective_weight_bias()
    gain = (bn.weight if affine else 1) / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(weight, conv.weight * gain.view(-1, 1, 1, 1))
    b = conv.bias if bias else 0
    torch.testing.assert_close(
        folded_bias, (bn.bias if affine else 0) + (b - bn.running_mean) * gain
    )


def test_quantised_conv_with_folded_bn_uses_the_folded_weight() -> None:
    conv = nn.Conv2d(3, 5, 3, padding=1)
    layer = QuantConv2d.from_float(conv, _mixed(5, 1), bn=_random_bn(5, 2)).eval()
    weight, bias = layer.effective_weight_bias()
    layer.weight_quant.init_scales(layer.weight_rows().detach())
    x = torch.randn(2, 3, 6, 6, generator=_gen(3))
    _calibrate(layer, x)
    with torch.no_grad():
        expected = F.conv2d(layer.act_quant(x), _row_reference(weight, layer), bias, padding=1)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            layer.quantized_weight(), _row_reference(weight, layer), rtol=1e-6, atol=1e-7
        )


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "groups"), [(8, 12, 4), (6, 6, 6), (4, 8, 4), (6, 4, 2)]
)
def test_grouped_and_depthwise_convs(in_channels: int, out_channels: int, groups: int) -> None:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, dilation=1, groups=groups)
    layer = QuantConv2d.from_float(conv, _mixed(out_channels, groups)).eval()
    per_row = in_channels // groups * 9
    assert layer.weight_rows().shape == (out_channels, per_row)
    assert layer.weight_quant.elements_per_row == per_row
    layer.weight_quant.init_scales(layer.weight_rows().detach())
    x = torch.randn(2, in_channels, 7, 7, generator=_gen(4))
    _calibrate(layer, x)
    with torch.no_grad():
        expected = F.conv2d(
            layer.act_quant(x),
            _row_reference(conv.weight, layer),
            conv.bias,
            padding=1,
            groups=groups,
        )
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
        mixq.set_quantization(layer, weights=False, activations=False)
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-6, atol=1e-6)


def test_conv_geometry_is_kept() -> None:
    conv = nn.Conv2d(
        4, 4, (3, 2), stride=(2, 1), padding=(2, 1), dilation=2, groups=2, padding_mode="reflect"
    )
    layer = QuantConv2d.from_float(conv, RowAssignment.uniform("fixed-8", 4))
    for attr in ("stride", "padding", "dilation", "groups", "padding_mode", "kernel_size"):
        assert getattr(layer, attr) == getattr(conv, attr)
    assert layer.bn is None and layer.bias is not None
    mixq.set_quantization(layer, weights=False, activations=False)
    x = torch.randn(1, 4, 8, 8, generator=_gen(5))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x))
    # The float conv keeps its own tensors.
    with torch.no_grad():
        layer.weight.add_(1.0)
    assert not torch.equal(layer.weight, conv.weight)


def test_quant_linear_on_sequences() -> None:
    linear = nn.Linear(10, 7)
    layer = QuantLinear.from_float(linear, _mixed(7, 5))
    layer.weight_quant.init_scales(layer.weight_rows().detach())
    x = torch.randn(3, 5, 10, generator=_gen(6))  # (B, T, C)
    _calibrate(layer, x)
    assert layer.act_quant.signed is True
    out = layer(x)
    assert out.shape == (3, 5, 7)
    expected = F.linear(layer.act_quant(x), _row_reference(linear.weight, layer), linear.bias)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    for b in range(3):  # the same as each sequence on its own
        torch.testing.assert_close(layer(x[b]), out[b])
    mixq.set_quantization(layer, weights=False, activations=False)
    torch.testing.assert_close(layer(x), linear(x))


def test_float_input_when_act_bits_is_zero() -> None:
    linear = nn.Linear(4, 3, bias=False)
    layer = QuantLinear.from_float(linear, RowAssignment.uniform("fixed-2", 3), act_bits=0)
    assert layer.act_quant is None
    layer.weight_quant.init_scales(layer.weight_rows().detach(), "max")
    x = torch.randn(2, 4, generator=_gen(7))
    torch.testing.assert_close(layer(x), F.linear(x, _row_reference(linear.weight, layer)))


def test_unfrozen_bn_training_updates_running_stats() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=True)
    bn = _random_bn(4, 8)
    reference = nn.Sequential(copy.deepcopy(conv), copy.deepcopy(bn)).train()
    layer = QuantConv2d.from_float(conv, _mixed(4), bn=copy.deepcopy(bn)).train()
    layer.bn_frozen = False
    mixq.set_quantization(layer, weights=False, activations=False)
    for seed in range(3):
        x = torch.randn(5, 3, 6, 6, generator=_gen(10 + seed)) * 2 + 1
        out = layer(x)
        expected = reference(x)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    ref_bn = reference[1]
    torch.testing.assert_close(layer.bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(layer.bn.running_var, ref_bn.running_var)
    assert int(layer.bn.num_batches_tracked) == 3
    assert not torch.allclose(layer.bn.running_mean, bn.running_mean)
    # Gradients reach the weight through the folded batch statistics' gain.
    out.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_frozen_bn_training_keeps_running_stats() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    bn = _random_bn(4, 9)
    layer = QuantConv2d.from_float(conv, _mixed(4), bn=copy.deepcopy(bn)).train()
    assert layer.bn_frozen
    mixq.set_quantization(layer, weights=False, activations=False)
    x = torch.randn(5, 3, 6, 6, generator=_gen(11))
    out = layer(x)
    assert torch.equal(layer.bn.running_mean, bn.running_mean)
    assert torch.equal(layer.bn.running_var, bn.running_var)
    with torch.no_grad():
        torch.testing.assert_close(out, nn.Sequential(conv, bn).eval()(x), rtol=1e-5, atol=1e-5)


def test_gradients_reach_weight_and_scales() -> None:
    linear = nn.Linear(6, 4)
    layer = QuantLinear.from_float(linear, _mixed(4, 2))
    layer.weight_quant.init_scales(layer.weight_rows().detach())
    x = torch.randn(8, 6, generator=_gen(12))
    _calibrate(layer, x)
    layer(x).pow(2).sum().backward()
    for p in (layer.weight, layer.bias, layer.weight_quant.alpha, layer.act_quant.alpha):
        assert p.grad is not None and bool(torch.isfinite(p.grad).all())
        assert float(p.grad.abs().sum()) > 0


def test_assignment_must_match_rows() -> None:
    with pytest.raises(ValueError, match="assignment has 3 rows, weight has 4"):
        QuantLinear.from_float(nn.Linear(2, 4), RowAssignment.uniform("fixed-4", 3))
    with pytest.raises(ValueError, match="assignment has 5 rows, weight has 4"):
        QuantConv2d.from_float(nn.Conv2d(2, 4, 1), RowAssignment.uniform("fixed-4", 5))


def test_set_quantization_toggles_each_kind() -> None:
    model = nn.Sequential(
        QuantLinear.from_float(nn.Linear(3, 3), RowAssignment.uniform("fixed-4", 3)),
        nn.ReLU(),
        QuantLinear.from_float(nn.Linear(3, 2), RowAssignment.uniform("fixed-4", 2)),
    )
    weights = [m for m in model.modules() if isinstance(m, mixq.RowWeightQuantizer)]
    acts = [m for m in model.modules() if isinstance(m, mixq.ActQuantizer)]
    mixq.set_quantization(model, weights=False)
    assert [q.enabled for q in weights] == [False, False]
    assert [q.enabled for q in acts] == [True, True]
    mixq.set_quantization(model, activations=False)
    assert [q.enabled for q in weights + acts] == [False] * 4
    mixq.set_quantization(model, weights=True, activations=True)
    assert [q.enabled for q in weights + acts] == [True] * 4
    mixq.set_quantization(model)
    assert [q.enabled for q in weights + acts] == [True] * 4


def test_layers_built_directly_quantise_every_row_at_fixed8() -> None:
    torch.manual_seed(0)
    linear = QuantLinear(16, 4)
    conv = QuantConv2d(3, 8, 3, padding=1)
    assert [str(c) for c in linear.assignment.candidates] == ["fixed-8"]
    assert conv.assignment.rows == 8 and conv.bn is None and conv.bn_frozen
    for layer, x, reference in (
        (linear, torch.randn(32, 16), lambda x: F.linear(x, linear.weight, linear.bias)),
        (conv, torch.randn(4, 3, 8, 8), lambda x: F.conv2d(x, conv.weight, conv.bias, padding=1)),
    ):
        mixq.calibrate(layer, [x], progress=False)
        layer.eval()
        expected = reference(x)
        error = (layer(x) - expected).abs().max()
        # 8-bit weights and inputs: a few percent of the output range, never exact float.
        assert 0 < error < 0.05 * expected.abs().max()


def test_layers_built_directly_take_an_assignment_and_act_bits() -> None:
    assignment = RowAssignment.from_rows(["sp2-4", "fixed-4", "sp2-4"])
    layer = QuantLinear(5, 3, assignment=assignment, act_bits=0)
    assert layer.act_quant is None and layer.assignment == assignment
    with pytest.raises(SchemeError, match="3 rows, weight has 2"):
        QuantLinear(5, 2, assignment=assignment)
