"""Small quantised models the PTQ tests share."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

import mixq
from mixq.calibrate import calibrate
from mixq.models.cifar_resnet import CifarResNet
from mixq.recipe import Recipe


def small_resnet_batches(count: int = 4, size: int = 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(size, 3, 8, 8, generator=generator) for _ in range(count)]


def calibrated_small_resnet(batches: list[torch.Tensor]) -> nn.Module:
    """A CIFAR ResNet with one block per stage (residual adds, option-A shortcuts), mixed
    4-bit rows, nearest-rounded weights and calibrated activation quantisers."""
    torch.manual_seed(0)
    model = CifarResNet(1).eval()
    recipe = replace(Recipe.preset("rmsmp"), weight_rounding="nearest")
    quantized = mixq.quantize(model, recipe, progress=False)
    calibrate(quantized, batches, progress=False)
    return quantized


def rounded_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")}
