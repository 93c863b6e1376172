"""Tests of the CIFAR ResNets, their pretrained-checkpoint loading, and SmallCNN."""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from mixq.data import cifar10_loader
from mixq.errors import CheckpointError
from mixq.models import (
    Add,
    BasicBlock,
    CifarResNet,
    DownsampleShortcut,
    SmallCNN,
    load_pretrained_cifar_resnet,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
)

RESNET20_FILE = "resnet20-12fca82f.th"
RESNET32_FILE = "resnet32-d509ac18.th"


def _checkpoint(shared_data: Path, name: str) -> Path:
    """Path of a pretrained checkpoint, or a skip when it is absent."""
    path = shared_data / "resnet-cifar10" / name
    if not path.is_file():
        pytest.skip(f"pretrained checkpoint not found: {path}")
    return path


@pytest.fixture(scope="module")
def resnet20_file(shared_data: Path) -> Path:
    """The pretrained ResNet-20 checkpoint."""
    return _checkpoint(shared_data, RESNET20_FILE)


@pytest.fixture(scope="module")
def resnet32_file(shared_data: Path) -> Path:
    """The pretrained ResNet-32 checkpoint."""
    return _checkpoint(shared_data, RESNET32_FILE)


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- architecture ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("builder", "expected"),
    [(resnet20, 269_722), (resnet32, 464_154), (resnet44, 658_586), (resnet56, 853_018)],
)
def test_parameter_counts(builder: Callable[[], CifarResNet], expected: int) -> None:
    assert _param_count(builder()) == expected


@pytest.mark.parametrize(("builder", "blocks"), [(resnet20, 3), (resnet56, 9)])
def test_stage_depths(builder: Callable[[], CifarResNet], blocks: int) -> None:
    model = builder()
    for stage in (model.layer1, model.layer2, model.layer3):
        assert len(stage) == blocks
        assert all(isinstance(block, BasicBlock) for block in stage)


def test_forward_shapes_through_stages() -> None:
    model = resnet20().eval()
    shapes: dict[str, tuple[int, ...]] = {}
    for name in ("layer1", "layer2", "layer3", "pool", "flatten"):
        module = getattr(model, name)
        module.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape))
        )
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert shapes == {
        "layer1": (2, 16, 32, 32),
        "layer2": (2, 32, 16, 16),
        "layer3": (2, 64, 8, 8),
        "pool": (2, 64, 1, 1),
        "flatten": (2, 64),
    }


def test_num_classes_sets_the_classifier() -> None:
    model = resnet32(num_classes=100).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, 100)


def test_every_activation_and_addition_is_its_own_module() -> None:
    model = resnet20()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    adds = [m for m in model.modules() if isinstance(m, Add)]
    # The stem ReLU plus two per block, and one addition per block.
    assert len(relus) == 1 + 2 * 9
    assert len({id(m) for m in relus}) == len(relus)
    assert len(adds) == 9
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d)
    assert isinstance(model.flatten, nn.Flatten)


def test_only_stage_entries_downsample() -> None:
    model = resnet20()
    shortcut_types = [
        type(block.shortcut) for block in model.modules() if isinstance(block, BasicBlock)
    ]
    expected = [nn.Identity] * 3 + ([DownsampleShortcut] + [nn.Identity] * 2) * 2
    assert shortcut_types == expected


def test_downsample_shortcut_subsamples_and_zero_pads() -> None:
    x = torch.randn(2, 16, 32, 32)
    out = DownsampleShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 16, 16)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0
    assert out[:, 24:].abs().sum() == 0


def test_downsample_shortcut_rejects_fewer_channels() -> None:
    with pytest.raises(ValueError, match="cannot shrink"):
        DownsampleShortcut(32, 16, stride=2)


def test_fresh_weights_use_kaiming_normal() -> None:
    torch.manual_seed(0)
    weight = resnet56().layer3[4].conv1.weight
    fan_in = 64 * 3 * 3
    # Kaiming normal (fan_in, ReLU gain) has std sqrt(2 / fan_in) = 0.0589; PyTorch's default
    # init would give about 0.024.
    assert weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    assert weight.mean().item() == pytest.approx(0.0, abs=0.002)


def test_deepcopy_and_pickle_keep_outputs() -> None:
    torch.manual_seed(0)
    model = resnet20().eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(copy.deepcopy(model)(x), expected)
        torch.testing.assert_close(pickle.loads(pickle.dumps(model))(x), expected)


# -- pretrained checkpoints ---------------------------------------------------------------


def test_pretrained_resnet20_state_dict_has_the_published_parameter_count(
    resnet20_file: Path,
) -> None:
    checkpoint = torch.load(resnet20_file, map_location="cpu", weights_only=True)
    assert set(checkpoint) == {"best_prec1", "state_dict"}
    assert checkpoint["best_prec1"] == pytest.approx(91.78, abs=0.01)
    state = checkpoint["state_dict"]
    assert all(key.startswith("module.") for key in state)
    params = sum(v.numel() for k, v in state.items() if not k.endswith(("mean", "var")))
    assert params == 269_722 == _param_count(resnet20())


@pytest.mark.parametrize(
    ("name", "file_name"), [("resnet20", RESNET20_FILE), ("resnet32", RESNET32_FILE)]
)
def test_pretrained_checkpoints_load_strictly(shared_data: Path, name: str, file_name: str) -> None:
    path = _checkpoint(shared_data, file_name)
    model = load_pretrained_cifar_resnet(name, path)
    assert not model.training
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    loaded = model.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key.removeprefix("module.")], value)
    # The same tensors also load with plain strict load_state_dict.
    fresh = {"resnet20": resnet20, "resnet32": resnet32}[name]()
    fresh.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)


def test_loads_into_an_existing_model_in_place(resnet20_file: Path) -> None:
    model = resnet20()
    assert load_pretrained_cifar_resnet(model, resnet20_file) is model


def test_pretrained_resnet20_accuracy_on_500_test_images(
    shared_data: Path, resnet20_file: Path
) -> None:
    tar = shared_data / "cifar10-jpeg" / "test.tar"
    if not tar.is_file():
        pytest.skip(f"CIFAR-10 test tar not found: {tar}")
    model = load_pretrained_cifar_resnet("resnet20", resnet20_file)
    correct = 0
    with torch.no_grad():
        for images, labels in cifar10_loader(tar.parent, "test", 250, limit=500):
            correct += int((model(images).argmax(1) == labels).sum())
    # Measured: 419 / 500 = 83.8% (81.03% on all 10,000 JPEG test images, 91.78% on the
    # original PNGs); the margin allows for BLAS differences flipping a few close calls.
    assert correct / 500 == pytest.approx(0.838, abs=0.02)


def test_missing_checkpoint_raises(tmp_path: Path) -> None:
    path = tmp_path / "absent.th"
    with pytest.raises(CheckpointError, match="not found") as info:
        load_pretrained_cifar_resnet("resnet20", path)
    assert str(path) in str(info.value)


def test_corrupt_checkpoint_raises(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.th"
    path.write_bytes(
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
        .to(torch.uint8)
        .numpy()
        .tobytes()
    )
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_pretrained_cifar_resnet("resnet20", path)


def test_non_state_dict_checkpoint_raises(tmp_path: Path) -> None:
    path = tmp_path / "list.th"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="no state dict"):
        load_pretrained_cifar_resnet("resnet20", path)


def test_checkpoint_of_another_depth_names_unexpected_keys(resnet32_file: Path) -> None:
    with pytest.raises(CheckpointError, match=r"unexpected keys layer1\.3\.bn1\.bias"):
        load_pretrained_cifar_resnet("resnet20", resnet32_file)


def test_missing_key_is_named(tmp_path: Path) -> None:
    state = resnet20().state_dict()
    del state["layer2.1.conv2.weight"]
    path = tmp_path / "partial.th"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"missing keys layer2\.1\.conv2\.weight;"):
        load_pretrained_cifar_resnet("resnet20", path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_named(tmp_path: Path, bad: float) -> None:
    state = resnet20().state_dict()
    state["layer3.2.conv1.weight"][0, 0, 0, 0] = bad  # what a flipped exponent bit gives
    path = tmp_path / "flipped.th"
    torch.save({"state_dict": state}, path)
    with pytest.raises(
        CheckpointError, match=r"non-finite values in \['layer3\.2\.conv1\.weight'\]"
    ):
        load_pretrained_cifar_resnet("resnet20", path)


def test_shape_mismatch_raises(resnet20_file: Path) -> None:
    with pytest.raises(CheckpointError, match="does not fit"):
        load_pretrained_cifar_resnet(resnet20(num_classes=100), resnet20_file)


def test_unknown_model_name_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown CIFAR ResNet 'resnet18'"):
        load_pretrained_cifar_resnet("resnet18", tmp_path / "x.th")


# -- SmallCNN -------------------------------------------------------------------------------


def test_small_cnn_shapes_and_size() -> None:
    model = SmallCNN().eval()
    with torch.no_grad():
        assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert _param_count(model) == 16_794
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len({id(m) for m in relus}) == 4


def test_small_cnn_width_and_channels_are_configurable() -> None:
    model = SmallCNN(in_channels=3, num_classes=7, width=8).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 28, 28)).shape == (2, 7)
    assert model.conv1.out_channels == 4
    assert model.linear.in_features == 8
    with pytest.raises(ValueError, match="width"):
        SmallCNN(width=1)


def test_small_cnn_learns_a_separable_toy_task() -> None:
    # Bright top half versus bright bottom half: a working conv net fits this in a few steps.
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (64,), generator=generator)
    images = torch.rand(64, 1, 28, 28, generator=generator) * 0.1
    images[labels == 0, :, :14] += 1.0
    images[labels == 1, :, 14:] += 1.0
    torch.manual_seed(0)
    model = SmallCNN(num_classes=2, width=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimiser.step()
    with torch.no_grad():
        accuracy = (model.eval()(images).argmax(1) == labels).float().mean().item()
    assert accuracy == 1.0
