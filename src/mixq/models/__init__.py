"""Model definitions: CIFAR-10 ResNets (with pretrained-checkpoint loading) and a small CNN."""

from mixq.models.cifar_resnet import (
    Add,
    BasicBlock,
    CifarResNet,
    DownsampleShortcut,
    load_pretrained_cifar_resnet,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
)
from mixq.models.small_cnn import SmallCNN

__all__ = [
    "Add",
    "BasicBlock",
    "CifarResNet",
    "DownsampleShortcut",
    "SmallCNN",
    "load_pretrained_cifar_resnet",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
]
