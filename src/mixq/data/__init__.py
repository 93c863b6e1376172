"""Data sets: CIFAR-10 from JPEG tars, decoded once and cached as uint8 arrays."""

from mixq.data.cifar10 import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    Split,
    cifar10_loader,
    class_balanced_order,
    default_data_root,
    load_cifar10_jpeg,
    normalize_uint8,
    random_crop_flip,
)
from mixq.data.epochs import EpochShuffleSampler, epoch_generator, set_epoch

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "EpochShuffleSampler",
    "Split",
    "cifar10_loader",
    "class_balanced_order",
    "default_data_root",
    "epoch_generator",
    "load_cifar10_jpeg",
    "normalize_uint8",
    "random_crop_flip",
    "set_epoch",
]
