"""The pretrained ResNet-20 on real CIFAR-10 JPEG images, integer-only against fake-quant."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mixq
from mixq.data.cifar10 import cifar10_loader
from mixq.integer import to_integer
from mixq.integer.agreement import compare_layers
from mixq.models.cifar_resnet import load_pretrained_cifar_resnet
from mixq.recipe import Recipe


@pytest.fixture(scope="module")
def models(shared_data: Path) -> tuple[torch.nn.Module, mixq.IntegerModel, list[torch.Tensor]]:
    float_model = load_pretrained_cifar_resnet(
        "resnet20", shared_data / "resnet-cifar10" / "resnet20-12fca82f.th"
    ).eval()
    calibration = [x for x, _ in cifar10_loader(shared_data, "train", 64, limit=128)]
    images = [x for x, _ in cifar10_loader(shared_data, "test", 100, limit=200)]
    recipe = Recipe.preset("rmsmp", act_bits=4)
    qnet = mixq.quantize(float_model, recipe, calibration_data=calibration, progress=False)
    return qnet, to_integer(qnet, images[0]), images


def test_each_layer_is_within_one_level_and_almost_always_exact(models) -> None:
    qnet, inet, images = models
    layers = compare_layers(qnet, inet, images)
    assert len(layers) == 20 and all(layer.max_abs_diff <= 1 for layer in layers)
    mismatches = sum(layer.mismatches for layer in layers)
    elements = sum(layer.elements for layer in layers)
    # Per image: the 3x32x32 input, 7 inputs of 16x32x32, 6 of 32x16x16, 6 of 64x8x8
    # (stage 2 and 3's first convs read the previous stage's size) and the 64 pooled values.
    per_image = 3 * 1024 + 7 * 16 * 1024 + 32 * 256 * 5 + 32 * 256 + 64 * 64 * 5 + 64
    assert per_image == 187_456 and elements == 200 * per_image
    assert mismatches <= 1e-5 * elements


def test_predictions_agree_and_the_int8_path_gives_the_same_integers(models) -> None:
    qnet, inet, images = models
    fast = to_integer(qnet, images[0], engine="int8")
    with torch.no_grad():
        for x in images:
            integers = inet.forward_integer(x)
            assert torch.equal(integers, fast.forward_integer(x))
            assert torch.equal(inet(x).argmax(1), qnet(x).argmax(1))
