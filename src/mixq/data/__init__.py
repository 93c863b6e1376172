"""Data sets: CIFAR-10 from JPEG tars (decoded once, cached as uint8 arrays) and Fashion-MNIST."""

from mixq.data.cifar10 import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    cifar10_loader,
    default_data_root,
    load_cifar10_jpeg,
    normalize_uint8,
    random_crop_flip,
)
from mixq.data.epochs import EpochShuffleSampler, epoch_generator, set_epoch
from mixq.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    fashion_mnist_loader,
    load_fashion_mnist,
)
from mixq.data.subsets import Split, class_balanced_order

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "EpochShuffleSampler",
    "Split",
    "cifar10_loader",
    "class_balanced_order",
    "default_data_root",
    "epoch_generator",
    "fashion_mnist_loader",
    "load_cifar10_jpeg",
    "load_fashion_mnist",
    "normalize_uint8",
    "random_crop_flip",
    "set_epoch",
]
