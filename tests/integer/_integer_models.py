"""Small quantised models for the integer-engine tests."""

from __future__ import annotations

import torch
from torch import nn

import mixq
from mixq.models.cifar_resnet import BasicBlock, CifarResNet
from mixq.recipe import Recipe


def batches(shape: tuple[int, ...], count: int = 3, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator) for _ in range(count)]


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


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return randomise_bn(CifarResNet(blocks_per_stage=1))


def randomise_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial folded gains and biases, as a trained network has; returns ``net``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                shape = module.weight.shape
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(0.6 * torch.rand(shape, generator=generator) - 0.3)
                module.running_mean.copy_(0.4 * torch.rand(shape, generator=generator) - 0.2)
                module.running_var.copy_(1.5 * torch.rand(shape, generator=generator) + 0.5)
    return net.eval()


def quantize(net: nn.Module, recipe: str | Recipe, data: list[torch.Tensor]) -> nn.Module:
    return mixq.quantize(net, recipe, calibration_data=data, progress=False)
