"""GPTQ error feedback: blocked updates, output error, grids, grouped convs, token inputs."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

import mixq
from mixq.errors import CalibrationError
from mixq.ptq.gptq import gptq_rows
from mixq.ptq.moments import SecondMoment
from mixq.ptq.rounding import apply_error_feedback
from mixq.ratio import Ratio
from mixq.recipe import LayerConfig

MIXED = "sp2-4:0.5,fixed-4:0.25,pot-4:0.25"


def _correlated_inputs(samples: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(samples, width // 4, generator=generator)
    mix = torch.randn(width // 4, width, generator=generator)
    return base @ mix + 0.1 * torch.randn(samples, width, generator=generator)


def _mixed_linear(width: int, rows: int, x: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    recipe = mixq.Recipe(default=LayerConfig(Ratio.parse(MIXED)), weight_rounding="nearest")
    return mixq.quantize(nn.Linear(width, rows), recipe, calibration_data=[x], progress=False)


def _column_quantizer(layer: nn.Module):
    return lambda col: layer.weight_quant(col.unsqueeze(1)).squeeze(1).detach()


def test_blocked_updates_give_the_column_by_column_result() -> None:
    x = _correlated_inputs(400, 300)
    layer = _mixed_linear(300, 24, x)
    h = x.T.double() @ x.double() / x.shape[0]
    w = layer.weight_rows().detach()
    one_by_one = gptq_rows(w, h, _column_quantizer(layer), block=1)  # the unblocked loop
    blocked = gptq_rows(w, h, _column_quantizer(layer), block=128)
    # The same sums in another order: all but a value on a rounding tie agree exactly.
    assert (one_by_one != blocked).float().mean() <= 0.001
    assert torch.allclose(one_by_one @ x.T, blocked @ x.T, atol=1e-3)


def test_gptq_beats_nearest_on_the_output_and_keeps_every_row_on_its_grid() -> None:
    x = _correlated_inputs(256, 64)
    layer = _mixed_linear(64, 16, x)
    w = layer.weight_rows().detach()
    nearest = layer.weight_quant(w).detach()
    rounded = gptq_rows(w, x.T @ x / x.shape[0], _column_quantizer(layer))
    output_error = lambda q: float((x @ (q - w).T).pow(2).mean())  # noqa: E731
    assert output_error(rounded) < 0.5 * output_error(nearest)
    # On the grid: quantising again changes nothing (each row on its own candidate).
    assert torch.allclose(layer.weight_quant(rounded).detach(), rounded, atol=1e-6)
    assert not torch.equal(rounded, nearest)


def test_grouped_convolutions_keep_nearest_rounding() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 6, 3, padding=1))
    batches = [torch.randn(4, 4, 6, 6) for _ in range(2)]
    recipe = replace(mixq.Recipe.preset("fixed4", first_last=None), weight_rounding="nearest")
    quantized = mixq.quantize(net, recipe, calibration_data=batches, progress=False)
    depthwise_before = quantized[0].weight.detach().clone()
    dense_before = quantized[1].weight.detach().clone()
    assert apply_error_feedback(quantized, batches, progress=False) == ["1"]
    assert torch.equal(quantized[0].weight, depthwise_before)
    assert not torch.equal(quantized[1].weight, dense_before)


def test_convolutions_with_same_padding_keep_nearest_rounding() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding="same"), nn.Conv2d(4, 6, 3, padding=1))
    batches = [torch.randn(4, 4, 6, 6) for _ in range(2)]
    recipe = replace(mixq.Recipe.preset("fixed4", first_last=None), weight_rounding="nearest")
    quantized = mixq.quantize(net, recipe, calibration_data=batches, progress=False)
    same_before = quantized[0].weight.detach().clone()
    assert apply_error_feedback(quantized, batches, progress=False) == ["1"]
    assert torch.equal(quantized[0].weight, same_before)


def test_second_moments_are_of_quantised_layers_only() -> None:
    with pytest.raises(CalibrationError, match="not a Linear"):
        SecondMoment()(nn.Linear(2, 2), (torch.ones(1, 2),))


class _TokenMixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(16, 32)
        self.down = nn.Linear(32, 8)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (batch, tokens, 16)
        return self.down(torch.relu(self.up(tokens)))


def test_linear_layers_on_token_sequences_take_every_token_as_a_sample() -> None:
    batches = [_correlated_inputs(5 * 7, 16, seed=s).reshape(5, 7, 16) for s in range(2)]
    recipe = replace(mixq.Recipe.preset("fixed4", first_last=None), weight_rounding="nearest")
    net = _TokenMixer().eval()
    quantized = mixq.quantize(net, recipe, calibration_data=batches, progress=False)
    moment = SecondMoment()
    moment(quantized.up, (batches[0],))
    assert moment.count == 35 and moment.matrix.shape == (16, 16)
    nearest = copy.deepcopy(quantized)
    apply_error_feedback(quantized, batches, progress=False)
    with torch.no_grad():
        reference = [net(b) for b in batches]
        after = sum(
            float((quantized(b) - r).pow(2).mean()) for b, r in zip(batches, reference, strict=True)
        )
        before = sum(
            float((nearest(b) - r).pow(2).mean()) for b, r in zip(batches, reference, strict=True)
        )
    assert after < before


def test_a_block_below_one_column_is_an_error() -> None:
    with pytest.raises(CalibrationError, match="block"):
        gptq_rows(torch.ones(2, 2), torch.eye(2), lambda col: col, block=0)
