"""A tiny Fashion-MNIST-format data set, float weights and a quantised checkpoint, made once
for the CLI tests (the CLI reads them through its normal code path)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import TINY_MODEL

from mixq.cli._zoo import get_model, save_float_weights
from mixq.cli.main import main
from mixq.train import TrainConfig, train


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class k is a bright 7x7 square at one of ten places on a noisy background."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    images = rng.integers(0, 60, size=(count, 28, 28))
    for image, label in zip(images, labels, strict=True):
        row, col = divmod(int(label), 5)
        image[3 + 14 * row : 10 + 14 * row, 1 + 5 * col : 8 + 5 * col] = 230
    return images.astype(np.uint8), labels


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fashion")
    for split, count, seed in (("train", 120, 0), ("t10k", 60, 1)):
        images, labels = _split(count, seed)
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(_idx(images))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(_idx(labels))
    return folder


@pytest.fixture(scope="session")
def float_weights(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """The tiny model after a few epochs on the tiny data (its accuracy means something)."""
    spec = get_model(TINY_MODEL)
    torch.manual_seed(0)
    model = spec.build()
    data = spec.loader("train", 20, root=tiny_data, train=True)
    train(model, data, TrainConfig(epochs=4, lr=0.05, bn_batch_stats=True), progress=False)
    path = tmp_path_factory.mktemp("float") / "float.pt"
    save_float_weights(model.eval(), path)
    return path


@pytest.fixture(scope="session")
def quantized(
    tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, float_weights: Path
) -> Path:
    """``mixq quantize`` with the rmsmp preset at 4-bit activations."""
    out = tmp_path_factory.mktemp("quantized")
    code = main(
        [
            "quantize",
            "--model",
            TINY_MODEL,
            "--weights",
            str(float_weights),
            "--recipe",
            "rmsmp",
            "--act-bits",
            "4",
            "--data-dir",
            str(tiny_data),
            "--calib-images",
            "40",
            "--batch-size",
            "20",
            "-o",
            str(out),
            "-q",
        ]
    )
    assert code == 0
    return out / "quantized.safetensors"
