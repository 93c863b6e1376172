"""A small convolutional network for 28x28 grayscale images such as Fashion-MNIST."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Two stages of two conv3x3-BN-ReLU layers, each followed by 2x2 max pooling.

    The first stage has ``width // 2`` channels at full resolution and the second ``width``
    channels at half resolution, which keeps the cost of both stages similar. Global average
    pooling and one linear layer produce the logits. With the defaults (28x28 input,
    ``width=32``) this is about 4.6 M multiply-accumulates per image and 17 k parameters, quick
    to train on a CPU. Every ReLU is its own module so that quantization code can treat each
    activation separately.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        if width < 2:
            raise ValueError(f"width must be >= 2, got {width}")
        half = width // 2
        self.conv1 = nn.Conv2d(in_channels, half, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.relu2 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(half, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU()
        self.conv4 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn4 = nn.BatchNorm2d(width)
        self.relu4 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(N, num_classes)`` for images ``(N, in_channels, H, W)``."""
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool1(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.pool2(self.relu4(self.bn4(self.conv4(x))))
        return self.linear(self.flatten(self.gap(x)))
