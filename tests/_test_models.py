"""Small models that the integer-engine and export tests share: BatchNorms with non-trivial
statistics, a one-block CIFAR ResNet, and a MobileNet-style network that holds every kind
of integer op (ReLU6, depthwise, inverted residuals, padded max pooling, cat,
Hardswish/SiLU/Sigmoid tables, clamps)."""

from __future__ import annotations

import torch
from torch import nn

import mixq
from mixq.models.cifar_resnet import CifarResNet
from mixq.recipe import Recipe


def batches(shape: tuple[int, ...], count: int = 3, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator) for _ in range(count)]


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


def tiny_resnet() -> nn.Module:
    """A one-block-per-stage CIFAR ResNet with randomised BatchNorms."""
    torch.manual_seed(0)
    return randomise_bn(CifarResNet(blocks_per_stage=1))


def quantize(net: nn.Module, recipe: str | Recipe, data: list[torch.Tensor]) -> nn.Module:
    return mixq.quantize(net, recipe, calibration_data=data, progress=False)
