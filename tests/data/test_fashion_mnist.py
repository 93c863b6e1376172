"""Fashion-MNIST: IDX parsing, corrupt files, the missing-data message, download, loader."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import mixq.data.fashion_mnist as fm
from mixq.data import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    fashion_mnist_loader,
    load_fashion_mnist,
    set_epoch,
)
from mixq.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images_name, labels_name = fm.FILES[split]
    (folder / images_name).write_bytes(idx_bytes(images))
    (folder / labels_name).write_bytes(idx_bytes(labels))


def toy_split(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    return images, np.arange(count) % 10


def test_reads_the_idx_files_of_a_folder(tmp_path: Path) -> None:
    images, labels = toy_split(30)
    write_split(tmp_path, "test", images, labels)
    got_images, got_labels = load_fashion_mnist("test", tmp_path, download=False)
    assert got_images.shape == (30, 28, 28) and got_images.dtype == np.uint8
    assert np.array_equal(got_images, images)
    assert got_labels.dtype == np.int64 and got_labels.tolist() == labels.tolist()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not gzip at all", "cannot read"),
        (gzip.compress(b"\x00\x00"), "too short"),
        (gzip.compress(struct.pack(">IIII", 0x801, 2, 28, 28) + bytes(2 * 784)), "magic number"),
        (gzip.compress(struct.pack(">IIII", 0x803, 2, 28, 28) + bytes(784)), "promises 1568"),
    ],
)
def test_a_corrupt_images_file_is_a_data_error(
    tmp_path: Path, payload: bytes, message: str
) -> None:
    write_split(tmp_path, "train", *toy_split(2))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(payload)
    with pytest.raises(DataError, match=message):
        load_fashion_mnist("train", tmp_path, download=False)


def test_mismatched_counts_and_bad_labels_are_refused(tmp_path: Path) -> None:
    images, labels = toy_split(10)
    write_split(tmp_path, "test", images, labels[:9])
    with pytest.raises(DataError, match="10 images but"):
        load_fashion_mnist("test", tmp_path, download=False)
    write_split(tmp_path, "test", images, np.full(10, 12))
    with pytest.raises(DataError, match="label 12"):
        load_fashion_mnist("test", tmp_path, download=False)


def test_no_data_and_no_download_names_the_files_and_the_package(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_fashion_mnist("train", tmp_path, download=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path) in message
    assert "dataset-fashion-mnist" in message
    assert list(tmp_path.iterdir()) == []


class _Response(io.BytesIO):
    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_download_checks_the_md5_and_writes_nothing_on_a_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = idx_bytes(np.arange(5) % 10)
    urls: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> _Response:
        urls.append(url)
        return _Response(payload)

    monkeypatch.setattr(fm.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(DataError, match="differs from the published"):
        fm.download_file("t10k-labels-idx1-ubyte.gz", tmp_path)
    assert urls == [fm.BASE_URL + "t10k-labels-idx1-ubyte.gz"]
    assert list(tmp_path.iterdir()) == []
    md5 = {**fm.MD5, "t10k-labels-idx1-ubyte.gz": hashlib.md5(payload).hexdigest()}
    monkeypatch.setattr(fm, "MD5", md5)
    path = fm.download_file("t10k-labels-idx1-ubyte.gz", tmp_path)
    assert path.read_bytes() == payload
    assert fm.read_idx(path, 1).tolist() == [0, 1, 2, 3, 4]


def test_no_network_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float) -> _Response:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(fm.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"cannot download .*no route to host"):
        load_fashion_mnist("test", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_loader_normalises_limits_and_shuffles_per_epoch(tmp_path: Path) -> None:
    images, labels = toy_split(40)
    images[:] = 51  # 0.2 after scaling
    write_split(tmp_path, "train", images, labels)
    loader = fashion_mnist_loader("train", 8, root=tmp_path, shuffle=True, limit=20, seed=3)
    batches = list(loader)
    assert [tuple(x.shape) for x, _ in batches] == [(8, 1, 28, 28)] * 2 + [(4, 1, 28, 28)]
    expected = (51 / 255 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    assert torch.allclose(batches[0][0], torch.full((8, 1, 28, 28), expected))
    seen = torch.cat([y for _, y in batches])
    assert torch.bincount(seen, minlength=10).tolist() == [2] * 10  # class-balanced subset
    again = torch.cat([y for _, y in loader])
    set_epoch(loader, 1)
    other = torch.cat([y for _, y in loader])
    assert torch.equal(seen, again) and not torch.equal(seen, other)
    assert sorted(other.tolist()) == sorted(seen.tolist())


@pytest.mark.skipif(not fm.SYSTEM_DIR.is_dir(), reason="apt package dataset-fashion-mnist absent")
def test_the_installed_test_split_has_1000_images_per_class() -> None:
    images, labels = load_fashion_mnist("test", download=False)
    assert images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [1000] * 10
    assert abs(images.mean() / 255 - FASHION_MNIST_MEAN) < 0.01
