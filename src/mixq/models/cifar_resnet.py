"""CIFAR-10 ResNets of He et al. (2016) with "option A" shortcuts.

The layout follows GitHub ``akamaster/pytorch_resnet_cifar10`` so that its pretrained
checkpoints load with ``strict=True``: a 3x3 stem with 16 channels, three stages of ``n``
basic blocks with 16, 32 and 64 channels, global average pooling and a linear classifier
(ResNet-20/32/44/56 for n = 3/5/7/9).

Unlike the original, every activation, the residual addition and the pooling are separate
module instances. They hold no parameters, so checkpoints still load strictly, but they
give quantization code a module to observe or replace at each of those points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mixq.errors import CheckpointError

__all__ = [
    "Add",
    "BasicBlock",
    "CifarResNet",
    "DownsampleShortcut",
    "load_pretrained_cifar_resnet",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
]

_CHECKPOINT_PREFIX = "module."
_BN_COUNTER_SUFFIX = "num_batches_tracked"


class Add(nn.Module):
    """Elementwise sum as a module, so the residual addition can be swapped out."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Return ``a + b``."""
        return a + b


class DownsampleShortcut(nn.Module):
    """Parameter-free "option A" shortcut: subsample spatially, zero-pad new channels.

    A named module rather than the original's lambda, so models deep-copy and pickle.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(
                f"option A shortcut cannot shrink channels ({in_channels} -> {out_channels})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Subsample ``x`` by ``stride`` and pad the channel dimension with zeros."""
        extra = self.out_channels - self.in_channels
        front = extra // 2
        sub = x[:, :, :: self.stride, :: self.stride]
        # F.pad takes pairs from the last dimension backwards: (W, W, H, H, C, C).
        return F.pad(sub, (0, 0, 0, 0, front, extra - front))

    def extra_repr(self) -> str:
        """Describe the channel change and stride in ``repr``."""
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = DownsampleShortcut(in_channels, channels, stride)
        self.add = Add()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the residual block."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(self.add(out, self.shortcut(x)))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs with ``blocks_per_stage`` basic blocks in each of 3 stages."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = _make_stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = _make_stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = _make_stage(32, 64, blocks_per_stage, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(64, num_classes)
        self.apply(_kaiming_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits of shape ``(N, num_classes)`` for images ``(N, 3, H, W)``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(self.flatten(self.pool(out)))


def _make_stage(in_channels: int, channels: int, blocks: int, stride: int) -> nn.Sequential:
    """Build one stage; only its first block changes stride and channel count."""
    layers = [BasicBlock(in_channels, channels, stride)]
    layers += [BasicBlock(channels, channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal init for conv and linear weights, as in the reference implementation."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 (3 blocks per stage, about 0.27 M parameters)."""
    return CifarResNet(3, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet-32 (5 blocks per stage, about 0.46 M parameters)."""
    return CifarResNet(5, num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    """ResNet-44 (7 blocks per stage, about 0.66 M parameters)."""
    return CifarResNet(7, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet-56 (9 blocks per stage, about 0.85 M parameters)."""
    return CifarResNet(9, num_classes)


_BUILDERS: dict[str, Callable[[], CifarResNet]] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
}


def load_pretrained_cifar_resnet(name_or_model: str | nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint of ``akamaster/pytorch_resnet_cifar10`` into a model, strictly.

    Args:
        name_or_model: ``"resnet20"``, ``"resnet32"``, ``"resnet44"`` or ``"resnet56"`` to
            build a fresh model, or an existing model to load into (it is modified in place).
        path: the ``.th`` file, a dict ``{"best_prec1", "state_dict"}`` whose keys carry a
            ``module.`` prefix (a plain state dict, with or without prefix, also works).

    Returns:
        The model with the weights loaded, in eval mode.

    Raises:
        ValueError: if ``name_or_model`` is an unknown name.
        CheckpointError: if the file is missing, is not a readable torch file, or its
            tensors do not match the model (names the missing and unexpected keys).
    """
    model = _resolve_model(name_or_model)
    state_dict = _read_state_dict(Path(path))
    _check_keys(model, state_dict, Path(path))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # shape mismatches surface here
        raise CheckpointError(f"checkpoint {path} does not fit the model: {exc}") from exc
    return model.eval()


def _resolve_model(name_or_model: str | nn.Module) -> nn.Module:
    """Return the given model, or build the named one."""
    if isinstance(name_or_model, nn.Module):
        return name_or_model
    try:
        return _BUILDERS[name_or_model]()
    except KeyError:
        known = ", ".join(sorted(_BUILDERS))
        raise ValueError(f"unknown CIFAR ResNet {name_or_model!r}; known: {known}") from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a checkpoint and strip the ``DataParallel`` ``module.`` prefix."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many unrelated types for a bad file
        raise CheckpointError(f"cannot read checkpoint {path} as a torch file: {exc}") from exc
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors")
    # A flipped byte in a float file often lands as NaN or Inf; a .pt file has no checksum.
    broken = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise CheckpointError(f"checkpoint {path} holds non-finite values in {broken[:5]}")
    return {_strip_prefix(key): value for key, value in state.items()}


def _strip_prefix(key: str) -> str:
    """Drop the ``module.`` prefix that ``nn.DataParallel`` adds to every key."""
    return key[len(_CHECKPOINT_PREFIX) :] if key.startswith(_CHECKPOINT_PREFIX) else key


def _check_keys(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise ``CheckpointError`` naming the keys that differ between model and checkpoint."""
    expected = set(model.state_dict())
    found = set(state_dict)
    # Checkpoints saved before PyTorch 0.4.1 (such as the pretrained ones) lack these
    # counters; BatchNorm fills them in itself even under strict loading.
    missing = sorted(k for k in expected - found if not k.endswith(_BN_COUNTER_SUFFIX))
    unexpected = sorted(found - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match {type(model).__name__}: "
            f"missing keys {_summarise(missing)}; unexpected keys {_summarise(unexpected)}"
        )


def _summarise(keys: list[str], limit: int = 10) -> str:
    """List at most ``limit`` keys so that error messages stay readable."""
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"{shown} (and {len(keys) - limit} more)" if len(keys) > limit else shown
