"""Small quantised models for the integer-engine tests."""

from __future__ import annotations

import torch
from _test_models import batches, quantize, randomise_bn, tiny_resnet
from torch import nn

from mixq.models.cifar_resnet import BasicBlock


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(12, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()


class ResidualNet(nn.Module):
    """A stem, an identity block and a downsampling (option A) block, pooling, a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.block1 = BasicBlock(8, 8)
        self.block2 = BasicBlock(8, 16, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.stem(x)))
        x = self.block2(self.block1(x))
        return self.linear(torch.flatten(self.pool(x), 1))


def residual_net() -> nn.Module:
    torch.manual_seed(0)
    return randomise_bn(ResidualNet())


__all__ = ["batches", "quantize", "randomise_bn", "residual_net", "small_cnn", "tiny_resnet"]
