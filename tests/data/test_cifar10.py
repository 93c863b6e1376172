"""Tests of CIFAR-10 loading from JPEG tars, the decode cache and the DataLoader."""

from __future__ import annotations

import io
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mixq.data.cifar10 as cifar10_module
from mixq.data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    cifar10_loader,
    class_balanced_order,
    default_data_root,
    load_cifar10_jpeg,
    normalize_uint8,
    random_crop_flip,
    set_epoch,
)
from mixq.errors import DataError

# -- a tiny synthetic tar: no real data needed ---------------------------------------------

# (class, file name, RGB colour); listed out of order to check the sorting.
_TOY_IMAGES = [
    ("cat", "0001.jpg", (200, 30, 30)),
    ("airplane", "0001.jpg", (30, 200, 30)),
    ("cat", "0000.jpg", (30, 30, 200)),
    ("airplane", "0000.jpg", (250, 250, 250)),
]


def _jpeg_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _write_tar(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def toy_root(tmp_path: Path) -> Path:
    """A folder with a 4-image ``test.tar`` in the CIFAR-10 JPEG layout."""
    root = tmp_path / "data"
    root.mkdir()
    entries = [(f"test/{c}/{f}", _jpeg_bytes(rgb)) for c, f, rgb in _TOY_IMAGES]
    _write_tar(root / "test.tar", [("test/README.txt", b"not an image"), *entries])
    return root


def test_toy_tar_is_decoded_sorted_by_class_then_name(toy_root: Path, tmp_path: Path) -> None:
    images, labels = load_cifar10_jpeg(toy_root, "test", tmp_path / "cache", progress=False)
    assert images.shape == (4, 32, 32, 3)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 0, 3, 3]  # airplane, airplane, cat, cat
    expected = [(250, 250, 250), (30, 200, 30), (30, 30, 200), (200, 30, 30)]
    for image, colour in zip(images, expected, strict=True):
        # JPEG is lossy even for flat colours; a few levels of error are normal.
        np.testing.assert_allclose(image.reshape(-1, 3).mean(0), colour, atol=4)


def test_cache_is_written_atomically_and_reused(
    toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = load_cifar10_jpeg(toy_root, "test", cache, progress=False)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1
    assert files[0].startswith("cifar10-jpeg-test-") and files[0].endswith(".npz")

    def fail(*_args: object) -> None:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(cifar10_module, "_decode_tar", fail)
    second = load_cifar10_jpeg(toy_root, "test", cache, progress=False)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_damaged_cache_is_rebuilt(toy_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    images, _ = load_cifar10_jpeg(toy_root, "test", cache, progress=False)
    (cache_file,) = cache.iterdir()
    cache_file.write_bytes(b"garbage")
    rebuilt, _ = load_cifar10_jpeg(toy_root, "test", cache, progress=False)
    np.testing.assert_array_equal(rebuilt, images)
    assert cache_file.stat().st_size > 4 * 32 * 32 * 3


def test_changed_tar_gets_a_new_cache_file(toy_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_cifar10_jpeg(toy_root, "test", cache, progress=False)
    _write_tar(toy_root / "test.tar", [("test/dog/0000.jpg", _jpeg_bytes((1, 2, 3)))])
    _, labels = load_cifar10_jpeg(toy_root, "test", cache, progress=False)
    assert labels.tolist() == [CIFAR10_CLASSES.index("dog")]
    assert len(list(cache.iterdir())) == 2


def test_missing_tar_raises_with_expected_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        load_cifar10_jpeg(tmp_path, "train", tmp_path / "cache")
    assert str(tmp_path / "train.tar") in str(info.value)


def test_corrupt_tar_raises(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "test.tar").write_bytes(rng.integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="cannot read CIFAR-10 tar"):
        load_cifar10_jpeg(tmp_path, "test", tmp_path / "cache", progress=False)


def test_unknown_class_folder_raises(tmp_path: Path) -> None:
    _write_tar(tmp_path / "test.tar", [("test/unicorn/0000.jpg", _jpeg_bytes((0, 0, 0)))])
    with pytest.raises(DataError, match="not inside a CIFAR-10 class folder"):
        load_cifar10_jpeg(tmp_path, "test", tmp_path / "cache", progress=False)


def test_undecodable_jpeg_raises(tmp_path: Path) -> None:
    _write_tar(tmp_path / "test.tar", [("test/cat/0000.jpg", b"\xff\xd8 not really a jpeg")])
    with pytest.raises(DataError, match=r"cannot decode test/cat/0000\.jpg"):
        load_cifar10_jpeg(tmp_path, "test", tmp_path / "cache", progress=False)


def test_unknown_split_raises(toy_root: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        load_cifar10_jpeg(toy_root, "val", progress=False)  # type: ignore[arg-type]


# -- helpers --------------------------------------------------------------------------------


def test_class_balanced_order_prefixes_are_balanced() -> None:
    labels = np.repeat(np.arange(10), 100)
    order = class_balanced_order(labels, seed=3)
    assert sorted(order.tolist()) == list(range(1000))
    for k in (1, 7, 50):
        assert np.bincount(labels[order[: 10 * k]], minlength=10).tolist() == [k] * 10
    np.testing.assert_array_equal(order, class_balanced_order(labels, seed=3))
    assert not np.array_equal(order, class_balanced_order(labels, seed=4))


def test_normalize_uint8_matches_the_formula() -> None:
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    out = normalize_uint8(images)
    mean, std = torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD)
    torch.testing.assert_close(out[0, :, 0, 0], -mean / std)
    torch.testing.assert_close(out[1, :, 0, 0], (1 - mean) / std)
    assert out.dtype == torch.float32


def test_random_crop_flip_is_a_window_of_the_padded_image() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=generator)
    out = random_crop_flip(images, generator)
    assert out.shape == images.shape
    assert out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    flips = 0
    for original, augmented in zip(padded, out, strict=True):
        windows = [
            (flip, original[:, top : top + 32, left : left + 32])
            for top in range(9)
            for left in range(9)
            for flip in (False, True)
        ]
        matches = [f for f, w in windows if torch.equal(w.flip(-1) if f else w, augmented)]
        assert matches, "augmented image is not a (flipped) crop of the padded original"
        flips += matches[0]
    assert 0 < flips < 16


# -- real CIFAR-10 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_dir(shared_data: Path) -> Path:
    """Folder with the real CIFAR-10 JPEG tars; skips when the test tar is absent."""
    folder = shared_data / "cifar10-jpeg"
    if not (folder / "test.tar").is_file():
        pytest.skip(f"CIFAR-10 JPEG test tar not found in {folder}")
    return folder


@pytest.fixture(scope="module")
def real_test_split(cifar_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The real test split (decoded once, about 1.5 s, then read from ~/.cache/mixq)."""
    return load_cifar10_jpeg(cifar_dir, "test", progress=False)


def test_default_data_root_is_the_resolved_shared_folder(shared_data: Path) -> None:
    assert default_data_root() == shared_data
    assert shared_data.is_absolute()
    assert shared_data.parts[-2:] == ("shared", "data")


def test_real_test_split_shapes_labels_and_statistics(
    real_test_split: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = real_test_split
    assert images.shape == (10_000, 32, 32, 3)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [1000] * 10
    assert np.all(np.diff(labels) >= 0)  # sorted by class
    # Channel means of the CIFAR-10 test set (0.494, 0.485, 0.450 on these JPEGs).
    np.testing.assert_allclose(
        images.reshape(-1, 3).mean(0) / 255, [0.494, 0.485, 0.450], atol=0.003
    )


def test_parent_folder_is_accepted_as_root(
    shared_data: Path, real_test_split: tuple[np.ndarray, np.ndarray]
) -> None:
    _, labels = load_cifar10_jpeg(shared_data, "test", progress=False)
    np.testing.assert_array_equal(labels, real_test_split[1])


def test_loader_normalises_and_balances_a_limited_subset(
    cifar_dir: Path, real_test_split: tuple[np.ndarray, np.ndarray]
) -> None:
    loader = cifar10_loader(cifar_dir, "test", 300, limit=1000, seed=0)
    assert len(loader) == math.ceil(1000 / 300)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [300, 300, 300, 100]
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert images.shape == (1000, 3, 32, 32)
    assert images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == [100] * 10
    # The same images as the raw array, normalised with the ImageNet statistics.
    keep = class_balanced_order(real_test_split[1], seed=0)[:1000]
    raw = torch.from_numpy(real_test_split[0][keep]).permute(0, 3, 1, 2)
    torch.testing.assert_close(images, normalize_uint8(raw))
    np.testing.assert_array_equal(labels.numpy(), real_test_split[1][keep])
    # CIFAR-10 is close to, not exactly at, the ImageNet statistics used for normalisation.
    means = images.mean(dim=(0, 2, 3))
    stds = images.std(dim=(0, 2, 3))
    assert means.abs().max() < 0.25
    assert torch.all((stds > 0.9) & (stds < 1.25))


def test_loader_shuffle_is_seeded_and_changes_per_epoch(cifar_dir: Path) -> None:
    def epoch_labels(loader: torch.utils.data.DataLoader) -> list[int]:
        return torch.cat([y for _, y in loader]).tolist()

    loader = cifar10_loader(cifar_dir, "test", 100, shuffle=True, limit=500, seed=1)
    first = epoch_labels(loader)
    assert epoch_labels(loader) == first  # the order is a function of (seed, epoch)
    set_epoch(loader, 1)
    second = epoch_labels(loader)
    assert first != second
    assert sorted(first) == sorted(second)
    set_epoch(loader, 0)
    assert epoch_labels(loader) == first
    again = cifar10_loader(cifar_dir, "test", 100, shuffle=True, limit=500, seed=1)
    assert epoch_labels(again) == first


def test_loader_augmentation_keeps_shapes_and_changes_pixels(cifar_dir: Path) -> None:
    plain = next(iter(cifar10_loader(cifar_dir, "test", 200, limit=200)))
    augmented = next(iter(cifar10_loader(cifar_dir, "test", 200, limit=200, train_augment=True)))
    assert augmented[0].shape == plain[0].shape == (200, 3, 32, 32)
    assert augmented[0].dtype == torch.float32
    torch.testing.assert_close(augmented[1], plain[1])
    changed = (augmented[0] != plain[0]).flatten(1).any(1)
    # Only crops at offset (4, 4) without a flip leave an image as it was: 1 in 162.
    assert changed.float().mean() > 0.9
    # Zero padding is black before normalisation, so -mean/std values appear.
    black = -torch.tensor(CIFAR10_MEAN) / torch.tensor(CIFAR10_STD)
    assert (augmented[0][:, 0] == black[0]).any()


def test_loader_rejects_bad_arguments(toy_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        cifar10_loader(toy_root, "test", 0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="limit"):
        cifar10_loader(toy_root, "test", 4, limit=0, cache_dir=tmp_path)


def test_cache_with_out_of_range_labels_is_rebuilt(toy_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    images, labels = load_cifar10_jpeg(toy_root, "test", cache, progress=False)
    (cache_file,) = cache.iterdir()
    np.savez(cache_file.with_suffix(""), images=images, labels=labels + 20)
    with np.load(cache_file) as edited:
        assert int(edited["labels"].min()) >= 20  # the edit landed in the cache file
    _, rebuilt = load_cifar10_jpeg(toy_root, "test", cache, progress=False)
    assert np.array_equal(rebuilt, labels)  # decoded again, not the edited labels
