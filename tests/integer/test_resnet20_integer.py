"""The pretrained ResNet-20 on real CIFAR-10 JPEG images: the deployed integer model
against the exact evaluation mode, the engines against each other, and against float
fake-quant."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mixq
from mixq.data.cifar10 import cifar10_loader
from mixq.integer import evaluate_exact, exact_model, to_integer
from mixq.integer.agreement import compare_layers
from mixq.models.cifar_resnet import load_pretrained_cifar_resnet
from mixq.recipe import Recipe

REFERENCE_IMAGES = 50  # the reference engine sees these; the int8 engine every image


@pytest.fixture(scope="module")
def models(shared_data: Path) -> tuple[torch.nn.Module, mixq.IntegerModel, list[torch.Tensor]]:
    float_model = load_pretrained_cifar_resnet(
        "resnet20", shared_data / "resnet-cifar10" / "resnet20-12fca82f.th"
    ).eval()
    calibration = [x for x, _ in cifar10_loader(shared_data, "train", 64, limit=128)]
    images = [x for x, _ in cifar10_loader(shared_data, "test", 100, limit=300)]
    recipe = Recipe.preset("rmsmp", act_bits=4)
    qnet = mixq.quantize(float_model, recipe, calibration_data=calibration, progress=False)
    return qnet, to_integer(qnet, images[0], engine="int8"), images


def test_each_layer_is_within_a_level_of_fake_quant_almost_everywhere(models) -> None:
    qnet, inet, images = models
    layers = compare_layers(qnet, inet, images[:1])
    assert len(layers) == 20
    mismatches = sum(layer.mismatches for layer in layers)
    elements = sum(layer.elements for layer in layers)
    # Per image: the 3x32x32 input, 7 inputs of 16x32x32, 6 of 32x16x16, 6 of 64x8x8
    # (stage 2 and 3's first convs read the previous stage's size) and the 64 pooled values.
    per_image = 3 * 1024 + 7 * 16 * 1024 + 32 * 256 * 5 + 32 * 256 + 64 * 64 * 5 + 64
    assert per_image == 187_456 and elements == 100 * per_image
    # Fed fake-quant's own levels, the deployed arithmetic (16-bit shortcuts, averaging
    # after rounding) moves a level by one on under one element in a thousand.
    assert max(layer.max_abs_diff for layer in layers) <= 1
    assert mismatches <= 2e-3 * elements


def test_what_is_evaluated_is_what_is_deployed_on_real_images(models) -> None:
    qnet, inet, images = models
    reference = to_integer(qnet, images[0], engine="reference")
    fast = to_integer(qnet, images[0], engine="fast")  # the int8 engine where unavailable
    exact = exact_model(qnet, images[0]).eval()
    agree = 0
    with torch.no_grad():
        for x in images:
            integers = inet.forward_integer(x)
            assert torch.equal(fast.forward_integer(x), integers)
            assert torch.equal(exact(x).argmax(1), integers.argmax(1))  # zero disagreements
            agree += int((qnet(x).argmax(1) == integers.argmax(1)).sum())
        few = images[0][:REFERENCE_IMAGES]
        assert torch.equal(reference.forward_integer(few), inet.forward_integer(few))
    assert agree >= 0.9 * sum(len(x) for x in images)  # float fake-quant: mostly the same


def test_evaluate_exact_is_the_deployed_top1(models, shared_data: Path) -> None:
    qnet, inet, _ = models
    batches = list(cifar10_loader(shared_data, "test", 100, limit=200))
    result = evaluate_exact(qnet, batches, integer=inet)
    correct = sum(int((inet(x).argmax(1) == y).sum()) for x, y in batches)
    assert result.images == 200 and result.correct == correct
    assert 0.6 < result.top1 < 0.95
