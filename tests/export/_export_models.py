"""Models for the export tests (the shared ones live in ``tests/_test_models.py``)."""

from __future__ import annotations

import torch
from _test_models import MobileLike, batches, quantize, randomise_bn, tiny_resnet
from torch import nn

import mixq
from mixq.recipe import Recipe

__all__ = ["MobileLike", "batches", "quantize", "quantized_mobile", "randomise_bn", "tiny_resnet"]


def quantized_mobile(act_bits: int = 8) -> tuple[nn.Module, list[torch.Tensor]]:
    """The MobileNet-style network quantised with rmsmp (every layer mixed), and its data."""
    torch.manual_seed(0)
    data = batches((8, 3, 16, 16))
    recipe = Recipe.preset("rmsmp", first_last=None, act_bits=act_bits)
    net = randomise_bn(MobileLike())
    return mixq.quantize(net, recipe, calibration_data=data, progress=False), data
