"""ResNet-18 for ImageNet: the published size and work, and torchvision's layer names."""

from __future__ import annotations

import torch

from mixq.models.resnet_imagenet import resnet18_imagenet
from mixq.shapes import measure_layer_shapes


def test_resnet18_size_work_and_names() -> None:
    model = resnet18_imagenet()
    # torchvision's resnet18 has 11,689,512 parameters and about 1.82 G multiply-adds.
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    shapes = measure_layer_shapes(model, torch.zeros(1, 3, 224, 224))
    assert len(shapes) == 21  # 1 stem + 16 block convs + 3 downsample convs + fc
    assert sum(s.macs for s in shapes.values()) == 1_814_073_344
    stem, fc = shapes["conv1"], shapes["fc"]
    assert (stem.rows, stem.macs_per_row, stem.positions) == (64, 3 * 7 * 7, 112 * 112)
    assert (fc.rows, fc.macs_per_row, fc.positions) == (1000, 512, 1)
    down = shapes["layer4.0.downsample.0"]
    assert (down.rows, down.macs_per_row, down.positions) == (512, 256, 7 * 7)
    assert shapes["layer4.1.conv2"].macs_per_row == 512 * 9  # the longest row: 4608 MACs
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
