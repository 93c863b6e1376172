"""find_conv_bn_pairs: which BatchNorms can be folded into their conv."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mixq.fold import find_conv_bn_pairs
from mixq.models import SmallCNN, resnet20


def test_resnet20_pairs() -> None:
    pairs = find_conv_bn_pairs(resnet20())
    assert len(pairs) == 19
    assert pairs["conv1"] == "bn1"
    assert pairs["layer2.0.conv1"] == "layer2.0.bn1"
    assert pairs["layer3.2.conv2"] == "layer3.2.bn2"
    assert find_conv_bn_pairs(SmallCNN()) == {f"conv{i}": f"bn{i}" for i in range(1, 5)}


def test_only_a_bn_directly_after_the_conv() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
    )
    assert find_conv_bn_pairs(model) == {"3": "4"}


class TwoConsumers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y  # the raw conv output is used too


class SharedBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.a(x)) + self.bn(self.b(x))


class SharedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn1 = nn.BatchNorm2d(4)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv(self.bn1(self.conv(x))))


@pytest.mark.parametrize(
    "model", [TwoConsumers(), SharedBn(), SharedConv()], ids=lambda m: type(m).__name__
)
def test_shared_uses_are_not_folded(model: nn.Module) -> None:
    assert find_conv_bn_pairs(model) == {}


def test_bn_without_running_stats_is_not_folded() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))
    assert find_conv_bn_pairs(model) == {}


class Untraceable(nn.Module):
    def __init__(self, with_bn: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4) if with_bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow defeats torch.fx
            x = -x
        return self.bn(self.conv(x))


def test_untraceable_model_warns_when_it_has_bn(recwarn: pytest.WarningsRecorder) -> None:
    with pytest.warns(UserWarning, match="BatchNorm layers are not folded"):
        assert find_conv_bn_pairs(Untraceable(with_bn=True)) == {}
    assert find_conv_bn_pairs(Untraceable(with_bn=False)) == {}
    assert not [w for w in recwarn if "BatchNorm" in str(w.message)]
