"""MobileNet-style ops in the integer engine: ReLU6 and clamps, depthwise convolutions,
linear bottlenecks with residuals, padded max pooling, cat, and Hardswish/SiLU/Sigmoid as
lookup tables; every unsupported op named in one error."""

from __future__ import annotations

import pytest
import torch
from _integer_models import batches, quantize, randomise_bn
from _test_models import MobileLike
from torch import nn

from mixq.errors import UnsupportedLayerError
from mixq.integer import exact_model, to_integer
from mixq.integer.builder import Grid, lookup_table
from mixq.integer.ops import Lookup, MaxPool
from mixq.recipe import Recipe


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
