"""The models the CLI knows: built-in names, or the user's own ``pkg.module:factory``.

Every entry is an image classifier evaluated by top-1 accuracy. A quantised checkpoint
records its model's name (``extra["model"]``), so later commands rebuild a built-in
architecture without being told. A user's model (``--model pkg.module:factory``, a
callable returning the float ``nn.Module``; the current folder is importable) is imported
only when named on the command line, never because a file names it, and needs ``--data``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mixq.data import Split, cifar10_loader, default_data_root, fashion_mnist_loader
from mixq.errors import CheckpointError, DataError
from mixq.models import (
    SmallCNN,
    load_pretrained_cifar_resnet,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
)

Batches = DataLoader[tuple[torch.Tensor, torch.Tensor]]
# (data folder or None for the default place, split, batch size, train?, limit, seed)
LoaderFactory = Callable[[Path | None, Split, int, bool, int | None, int], Batches]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    data_name: str  # what the data set is called in messages
    build: Callable[[], nn.Module]  # a fresh float model
    make_loader: LoaderFactory
    input_shape: tuple[int, ...]  # one image, without the batch dimension

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """Zeros of the model's input shape: what shape-dependent conversions need."""
        return torch.zeros(batch, *self.input_shape)

    def loader(
        self,
        split: Split,
        batch_size: int,
        *,
        root: Path | None = None,
        train: bool = False,
        limit: int | None = None,
        seed: int = 0,
    ) -> Batches:
        """Batches of ``split``; ``train`` shuffles per epoch (and augments where usual)."""
        return self.make_loader(root, split, batch_size, train, limit, seed)

    def train_loader(
        self, batch_size: int, *, root: Path | None = None, limit: int | None = None, seed: int = 0
    ) -> Batches:
        """Batches of the training split, reshuffled (and augmented where usual) each epoch;
        ``limit`` takes a class-balanced subset, ``seed`` picks it and the order."""
        return self.loader("train", batch_size, root=root, train=True, limit=limit, seed=seed)

    def with_data(self, path: Path) -> ModelSpec:
        """The same model on the data at ``path`` (see :mod:`mixq.cli._data`)."""
        from mixq.cli._data import loader_factory

        make_loader, shape = loader_factory(path)
        return replace(self, data_name=str(path), make_loader=make_loader, input_shape=shape)


def _cifar_loader(
    root: Path | None, split: Split, batch_size: int, train: bool, limit: int | None, seed: int
) -> Batches:
    folder = root if root is not None else default_data_root() / "cifar10-jpeg"
    return cifar10_loader(
        folder, split, batch_size, train_augment=train, shuffle=train, limit=limit, seed=seed
    )


def _fashion_loader(
    root: Path | None, split: Split, batch_size: int, train: bool, limit: int | None, seed: int
) -> Batches:
    return fashion_mnist_loader(split, batch_size, root=root, shuffle=train, limit=limit, seed=seed)


CIFAR_SHAPE = (3, 32, 32)
FASHION_SHAPE = (1, 28, 28)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("resnet20", "CIFAR-10 JPEG", resnet20, _cifar_loader, CIFAR_SHAPE),
        ModelSpec("resnet32", "CIFAR-10 JPEG", resnet32, _cifar_loader, CIFAR_SHAPE),
        ModelSpec("resnet44", "CIFAR-10 JPEG", resnet44, _cifar_loader, CIFAR_SHAPE),
        ModelSpec("resnet56", "CIFAR-10 JPEG", resnet56, _cifar_loader, CIFAR_SHAPE),
        ModelSpec("small-cnn", "Fashion-MNIST", SmallCNN, _fashion_loader, FASHION_SHAPE),
        # The demo's model: a quarter of small-cnn's multiply-accumulates.
        ModelSpec(
            "small-cnn-w16",
            "Fashion-MNIST",
            partial(SmallCNN, width=16),
            _fashion_loader,
            FASHION_SHAPE,
        ),
    )
}


def is_user_model(name: str) -> bool:
    return ":" in name


def get_model(name: str) -> ModelSpec:
    """A built-in model by name, or the user's ``pkg.module:factory``."""
    if is_user_model(name):
        return _user_model(name)
    try:
        return MODELS[name]
    except KeyError:
        raise CheckpointError(
            f"unknown model {name!r}; built-in models: {', '.join(MODELS)}, or give your "
            "own as pkg.module:factory"
        ) from None


def _no_data(
    root: Path | None, split: Split, batch_size: int, train: bool, limit: int | None, seed: int
) -> Batches:
    raise DataError("a model of your own needs its data: pass --data")


def _user_model(name: str) -> ModelSpec:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr.isidentifier():
        raise CheckpointError(f"--model {name!r}: write pkg.module:factory")
    if os.getcwd() not in sys.path:  # like `python -m`: the current folder is importable
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CheckpointError(f"--model {name}: cannot import {module_name}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise CheckpointError(f"--model {name}: {module_name} has no callable {attr!r}")

    def build() -> nn.Module:
        model = factory()
        if not isinstance(model, nn.Module):
            raise CheckpointError(f"--model {name}: {attr}() returned {type(model).__name__}")
        return model

    return ModelSpec(name, "--data", build, _no_data, ())


def load_float_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load float weights: an akamaster ``.th`` file or a (``module.``-prefixed) state dict."""
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{path} is a quantised model; this needs float weights (.pt/.th)")
    # The akamaster reader accepts any plain state dict too, and names differing keys.
    return load_pretrained_cifar_resnet(model, path)


def save_float_weights(model: nn.Module, path: Path) -> None:
    from mixq.io import atomic_write

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


@torch.no_grad()
def top1(model: nn.Module, loader: Any, *, progress: bool = False) -> float:
    """Top-1 accuracy (a fraction) of ``model`` over ``loader``'s ``(images, labels)``."""
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    correct = total = 0
    try:
        for images, labels in tqdm(
            loader, desc="evaluate", disable=None if progress else True, leave=False
        ):
            predicted = model(images.to(device)).argmax(dim=1).cpu()
            correct += int((predicted == labels).sum())
            total += int(labels.numel())
    finally:
        model.train(was_training)
    return correct / max(total, 1)
