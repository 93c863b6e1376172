"""MobileNet-style ops in the integer engine: ReLU6 and clamps, depthwise convolutions,
linear bottlenecks with residuals, padded max pooling, cat, and Hardswish/SiLU/Sigmoid as
lookup tables; every unsupported op named in one error."""

from __future__ import annotations

import pytest
import torch
from _integer_models import batches, quantize, randomise_bn
from torch import nn

from mixq.errors import UnsupportedLayerError
from mixq.integer import exact_model, to_integer
from mixq.integer.builder import Grid, lookup_table
from mixq.integer.ops import Lookup, MaxPool
from mixq.recipe import Recipe


def _conv_bn(cin: int, cout: int, k: int = 3, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class Bottleneck(nn.Module):
    """Expand, depthwise, linear projection, residual: MobileNetV2's inverted residual."""

    def __init__(self, channels: int, act: type[nn.Module]) -> None:
        super().__init__()
        wide = 2 * channels
        self.body = nn.Sequential(
            *_conv_bn(channels, wide, 1), act(), *_conv_bn(wide, wide, 3, wide), act(),
            *_conv_bn(wide, channels, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MobileLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 8), nn.ReLU6())
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.block1 = Bottleneck(8, nn.ReLU6)
        self.block2 = Bottleneck(8, nn.Hardswish)
        self.left = nn.Sequential(*_conv_bn(8, 6, 1), nn.SiLU())
        self.right = nn.Sequential(*_conv_bn(8, 6, 3), nn.Hardtanh(0.0, 4.0))
        self.gate = nn.Sequential(*_conv_bn(12, 12, 1), nn.Sigmoid())
        self.head = nn.Sequential(*_conv_bn(12, 16, 1), nn.Hardswish())
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.pool(self.stem(x))))
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        x = self.head(self.gate(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def mobile() -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    data = batches((8, 3, 16, 16))
    return quantize(randomise_bn(MobileLike()), Recipe.preset("rmsmp", first_last=None), data), data


def test_mobilenet_style_network_runs_exactly_on_every_engine(mobile) -> None:
    qnet, data = mobile
    inet = to_integer(qnet, data[0])
    fast = to_integer(qnet, data[0], engine="int8")
    exact = exact_model(qnet, data[0], engine="reference").eval()
    kinds = {type(m).__name__ for m in inet.graph_module.modules()}
    assert {"Lookup", "MaxPool", "IntegerLayer", "GlobalAvgPool"} <= kinds
    agree = 0
    for x in data:
        assert torch.equal(inet.forward_integer(x), fast.forward_integer(x))
        assert torch.equal(exact(x), inet(x))
        agree += int((inet(x).argmax(1) == qnet(x).argmax(1)).sum())
    assert agree >= 0.75 * 8 * len(data)  # float fake-quant: mostly the same predictions
    with torch.no_grad():
        fake = qnet(data[0])
    close = (inet(data[0]) - fake).abs().max() / fake.abs().max()
    assert float(close) < 0.25


def test_lookup_tables_are_the_function_rounded_to_the_next_grid() -> None:
    grid, out = Grid(0.05, -128, 127), Grid(0.02, 0, 255)
    table = lookup_table("hardswish", grid, out)
    levels = torch.arange(-128, 128)
    expected = torch.round(nn.functional.hardswish(levels.double() * 0.05) / 0.02).clamp(0, 255)
    assert torch.equal(Lookup(table, -128, "hardswish")(levels), expected.long())
    sig = lookup_table("sigmoid", grid, Grid(1 / 255, 0, 255))
    assert int(sig[0]) == round(255 * float(torch.sigmoid(torch.tensor(-6.4)))) and sig[-1] == 255


def test_padded_max_pool_equals_float_max_pool() -> None:
    x = torch.randint(-20, 20, (2, 3, 7, 7))
    expected = nn.functional.max_pool2d(x.double(), 3, 2, padding=1).long()
    assert torch.equal(MaxPool(3, 2, 1)(x), expected)


def test_every_unsupported_op_is_listed_with_its_module_name() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.GELU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3), nn.LeakyReLU(), nn.AdaptiveAvgPool2d(2),
    ).eval()  # fmt: skip
    data = batches((4, 3, 12, 12))
    qnet = quantize(net, Recipe.preset("fixed8", first_last=None), data)
    qnet[3] = nn.BatchNorm2d(4).eval()  # an unfolded BatchNorm, as a user's model may hold
    with pytest.raises(UnsupportedLayerError) as error:
        to_integer(qnet, data[0])
    message = str(error.value)
    for name in ("'1' (GELU)", "'3' (BatchNorm2d not folded", "'6' (LeakyReLU)", "'7'"):
        assert name in message, message
