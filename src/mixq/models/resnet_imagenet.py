"""ResNet-18 for ImageNet (He et al., 2016), written here so mixq needs no torchvision.

The layout and module names follow torchvision's ``resnet18`` (``conv1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``, ...), so its layer shapes, and plans keyed by those
names, match what users of torchvision know. As in the CIFAR ResNets, every ReLU and the
residual addition are separate modules.

>>> model = resnet18_imagenet()
>>> sum(p.numel() for p in model.parameters())
11689512
"""

from __future__ import annotations

import torch
from torch import nn

from mixq.models.cifar_resnet import Add

__all__ = ["ImageNetBasicBlock", "ImageNetResNet", "resnet18_imagenet"]


class ImageNetBasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; a 1x1 conv-BN shortcut where the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )
        self.add = Add()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(self.add(out, self.downsample(x)))


class ImageNetResNet(nn.Module):
    """A 7x7 stem, max pooling, four stages of basic blocks (64-128-256-512), a classifier."""

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = (64, 128, 256, 512)
        stages = []
        in_channels = 64
        for index, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if index == 0 else 2
            layers = [ImageNetBasicBlock(in_channels, width, stride)]
            layers += [ImageNetBasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            in_channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for images ``(N, 3, 224, 224)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet18_imagenet(num_classes: int = 1000) -> ImageNetResNet:
    """ResNet-18: two basic blocks per stage, about 11.7 M parameters and 1.8 G MACs."""
    return ImageNetResNet((2, 2, 2, 2), num_classes)
