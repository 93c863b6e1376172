"""describe(): per-layer counts, bits and storage, computed by hand for small models."""

from __future__ import annotations

import pytest
from torch import nn

import mixq
from mixq.ratio import Ratio
from mixq.recipe import LayerConfig, Recipe, Rule
from mixq.summary import fp32_weight_kib


def test_mlp_summary_by_hand() -> None:
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 20), nn.ReLU(), nn.Linear(20, 4, bias=False)
    )
    recipe = Recipe(
        LayerConfig(Ratio.parse("sp2-4:0.6,fixed-4:0.35,fixed-8:0.05"), act_bits=4),
        (
            Rule("@first", ratio=Ratio.parse("fixed-8"), act_bits=8),
            Rule("@last", ratio=Ratio.parse("sp2-4:0.5,fixed-4:0.5"), act_bits=0),
        ),
        scale_method="max",
        row_scorer="magnitude",
    )
    summary = mixq.describe(mixq.quantize(model, recipe, progress=False))
    first, middle, last = summary.layers
    assert (first.name, first.kind, first.rows, first.weights) == ("0", "linear", 16, 128)
    assert first.counts == {"fixed-8": 16} and first.eq_bits == 8.0 and first.act_bits == 8
    # weights at 8 bits, a 32-bit scale per row and no code bits (one candidate), 32-bit bias.
    assert first.storage_bits == 128 * 8 + 16 * 32 + 16 * 32
    # 20 rows: 12 sp2-4, 7 fixed-4 (7.0), 1 fixed-8; 2 code bits per row.
    assert middle.counts == {"sp2-4": 12, "fixed-4": 7, "fixed-8": 1}
    assert middle.eq_bits == pytest.approx((19 * 4 + 8) / 20)
    assert middle.storage_bits == (19 * 4 + 8) * 16 + 20 * (32 + 2) + 20 * 32
    assert middle.act_bits == 4 and not middle.bn_folded
    assert last.counts == {"sp2-4": 2, "fixed-4": 2} and last.act_bits == 0
    assert last.storage_bits == 4 * 20 * 4 + 4 * (32 + 1)  # no bias
    assert summary.eq_bits == pytest.approx((128 * 8 + 320 * middle.eq_bits + 80 * 4) / 528)
    assert summary.float_layers == [] and summary.other_params == 0
    bits = first.storage_bits + middle.storage_bits + last.storage_bits
    assert summary.weight_kib == pytest.approx(bits / 8 / 1024)


def test_conv_with_folded_bn_and_float_layers() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, groups=4, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    ).eval()
    recipe = Recipe(
        LayerConfig(Ratio.parse("fixed-4")),
        (Rule("7", skip=True),),
        scale_method="max",
        row_scorer="magnitude",
    )
    summary = mixq.describe(mixq.quantize(model, recipe, progress=False))
    conv, grouped = summary.layers
    assert (conv.kind, conv.rows, conv.weights, conv.bn_folded) == ("conv2d", 8, 8 * 27, True)
    assert conv.storage_bits == 8 * 27 * 4 + 8 * 32 + 8 * 32  # the folded BN gives a bias
    assert (grouped.rows, grouped.weights) == (8, 8 * 2 * 9)
    assert summary.float_layers == ["7"]
    assert summary.other_params == 128 * 10 + 10
    total = conv.storage_bits + grouped.storage_bits + summary.other_params * 32
    assert summary.weight_kib == pytest.approx(total / 8 / 1024)
    assert summary.eq_bits == 4.0


def test_float_model_summary() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    summary = mixq.describe(model)
    assert summary.layers == [] and summary.float_layers == ["0", "2"]
    assert summary.other_params == 4 * 3 + 3 + 3 * 2 + 2
    assert summary.eq_bits == 0.0
    assert fp32_weight_kib(model) == pytest.approx(23 * 4 / 1024)
    assert summary.weight_kib == pytest.approx(fp32_weight_kib(model))
