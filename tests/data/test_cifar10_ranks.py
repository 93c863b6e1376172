"""Each process of a sharded run draws its own CIFAR-10 augmentation stream; rank 0 draws
the one-process stream, and every rank's stream is a function of (seed, epoch, rank), so a
resumed run augments as an uninterrupted one."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mixq.data import cifar10_loader, epoch_generator, set_epoch
from mixq.train.sharding import shard_loader

IMAGES = 8
ALL = list(range(IMAGES))


@pytest.fixture(scope="module")
def noise_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``train.tar`` of 8 noise images (2 classes): every crop and flip shows."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    with tarfile.open(root / "train.tar", "w") as archive:
        for index in range(IMAGES):
            buffer = io.BytesIO()
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
            info = tarfile.TarInfo(f"train/{('cat', 'dog')[index % 2]}/{index:04d}.jpg")
            info.size = buffer.tell()
            buffer.seek(0)
            archive.addfile(info, buffer)
    return root


def _loader(root: Path, batch: int = 4) -> DataLoader:
    return cifar10_loader(
        root, "train", batch, train_augment=True, shuffle=True, seed=7, cache_dir=root / "cache"
    )


def _augmented(loader: DataLoader, epoch: int) -> torch.Tensor:
    """All 8 images, augmented as ``loader``'s data set augments them at ``epoch``."""
    set_epoch(loader, epoch)
    return loader.dataset[ALL][0]


def _epoch(loader: DataLoader, epoch: int) -> list[torch.Tensor]:
    set_epoch(loader, epoch)
    return [images for images, _ in loader]


def test_ranks_draw_different_streams_and_rank_0_the_one_process_one(noise_root: Path) -> None:
    one = _loader(noise_root)
    ranks = [shard_loader(_loader(noise_root, 2), rank=r, world=2) for r in range(2)]
    for epoch in (0, 3):
        alone = _augmented(one, epoch)
        rank0, rank1 = (_augmented(shard, epoch) for shard in ranks)
        assert torch.equal(rank0, alone)
        # The same images augmented on rank 1: other crops and flips for most of them.
        differ = (rank1 != rank0).flatten(1).any(1)
        assert int(differ.sum()) >= IMAGES - 1
    # The one-process stream is still the one of (seed, epoch).
    set_epoch(one, 3)
    dataset = one.dataset
    assert dataset.generator.initial_seed() == epoch_generator(dataset.seed, 3).initial_seed()


def test_sharding_leaves_the_given_loaders_stream_alone(noise_root: Path) -> None:
    base = _loader(noise_root, 2)
    before = _augmented(base, 1)
    shard = shard_loader(base, rank=1, world=2)
    assert shard.dataset is not base.dataset
    assert shard.dataset.images is base.dataset.images  # a view: the images are shared
    assert torch.equal(_augmented(base, 1), before)


def test_a_rank_resumed_at_an_epoch_augments_as_an_uninterrupted_one(noise_root: Path) -> None:
    running = shard_loader(_loader(noise_root, 2), rank=1, world=2)
    _epoch(running, 0)
    uninterrupted = _epoch(running, 1)
    resumed = shard_loader(_loader(noise_root, 2), rank=1, world=2)
    got = _epoch(resumed, 1)
    assert len(got) == len(uninterrupted) == 2
    for a, b in zip(got, uninterrupted, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(_epoch(running, 2)[0], uninterrupted[0])  # epochs still differ
