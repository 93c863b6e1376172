"""Fashion-MNIST from the standard ``*-ubyte.gz`` IDX files (Xiao, Rasul and Vollgraf, 2017).

Where the files are looked for, in order: the folder given, else the Debian package's folder
``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``), else the
cache folder ``~/.cache/mixq/fashion-mnist``. When they are in none of these and downloading
is allowed, they are fetched from the official source into the given folder (or the cache),
each checked against its published MD5 and written atomically.

Only the IDX structure is checked on local files (magic number, dimensions, length): the
Debian package recompresses the archives, so their bytes differ from the published ones.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from mixq.data.epochs import EpochShuffleSampler
from mixq.data.subsets import Split, class_balanced_order
from mixq.errors import DataError
from mixq.io import atomic_write

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "SYSTEM_DIR",
    "fashion_mnist_loader",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "read_idx",
]

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Pixel statistics of the training set (values in 0..1).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DOWNLOAD_TIMEOUT_S = 60

# (images file, labels file) per split, and the MD5 of each archive as published upstream.
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

_UBYTE = 0x08  # IDX element type code of unsigned bytes
_IMAGE_SIDE = 28


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "mixq" / "fashion-mnist"


def find_fashion_mnist(
    split: Split, root: str | Path | None = None, *, download: bool = True
) -> tuple[Path, Path]:
    """Paths of the split's images and labels archives, downloading them if needed.

    Raises:
        DataError: when the files are nowhere and cannot (or may not) be downloaded.
    """
    if split not in FILES:
        raise DataError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    folders = [Path(root)] if root is not None else [SYSTEM_DIR, default_cache_dir()]
    names = FILES[split]
    for folder in folders:
        if all((folder / name).is_file() for name in names):
            return folder / names[0], folder / names[1]
    target = folders[-1]
    if not download:
        tried = ", ".join(str(f) for f in folders)
        raise DataError(
            f"Fashion-MNIST {split} files {list(names)} not found in {tried}; install the "
            "Debian package dataset-fashion-mnist, put the files there, or allow downloading"
        )
    for name in names:
        if not (target / name).is_file():
            download_file(name, target)
    return target / names[0], target / names[1]


def download_file(name: str, folder: Path) -> Path:
    """Fetch one archive from the official source into ``folder``, checking its MD5."""
    url = BASE_URL + name
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(
            f"cannot download {url} ({exc}); install the Debian package dataset-fashion-mnist "
            f"or put the file in {folder}"
        ) from None
    digest = hashlib.md5(payload).hexdigest()
    if digest != MD5[name]:
        raise DataError(f"{url}: MD5 {digest} differs from the published {MD5[name]}")
    path = folder / name

    def write(tmp: Path) -> None:
        tmp.write_bytes(payload)

    atomic_write(path, write)
    return path


def read_idx(path: str | Path, dims: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes with ``dims`` dimensions, checking its header.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte.gz"
    >>> path.write_bytes(gzip.compress(struct.pack(">IIBBB", 0x801, 3, 7, 0, 9))) and None
    >>> read_idx(path, 1).tolist()
    [7, 0, 9]
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path} as a gzip file: {exc}") from None
    header_size = 4 + 4 * dims
    if len(raw) < header_size:
        raise DataError(f"{path} is too short for an IDX header ({len(raw)} bytes)")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != (_UBYTE << 8 | dims):
        raise DataError(
            f"{path}: magic number {magic:#010x} is not that of a {dims}-D IDX file of "
            f"unsigned bytes ({_UBYTE << 8 | dims:#010x})"
        )
    shape = struct.unpack(f">{dims}I", raw[4:header_size])
    expected = int(np.prod(shape))
    if len(raw) - header_size != expected:
        raise DataError(
            f"{path}: header promises {expected} bytes of shape {shape}, "
            f"file holds {len(raw) - header_size}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def load_fashion_mnist(
    split: Split, root: str | Path | None = None, *, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 (N, 28, 28)`` and labels ``int64 (N,)`` of one split.

    Raises:
        DataError: missing files that cannot be downloaded, or a corrupt or mismatched file.
    """
    images_path, labels_path = find_fashion_mnist(split, root, download=download)
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1).astype(np.int64)
    if images.shape[1:] != (_IMAGE_SIDE, _IMAGE_SIDE):
        raise DataError(f"{images_path}: images are {images.shape[1:]}, not 28x28")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels"
        )
    if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{labels_path}: label {labels.max()} is not a class index 0..9")
    return images, labels


class _FashionBatches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Serves whole batches from uint8 images, normalised per batch."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, 28, 28) uint8
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        pixels = self.images[index].to(torch.float32) / 255.0
        return (pixels - FASHION_MNIST_MEAN) / FASHION_MNIST_STD, self.labels[index]


def fashion_mnist_loader(
    split: Split,
    batch_size: int,
    *,
    root: str | Path | None = None,
    shuffle: bool = False,
    limit: int | None = None,
    seed: int = 0,
    download: bool = True,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(float32 (B, 1, 28, 28), int64 (B,))``, normalised with the training statistics.

    ``shuffle`` draws each epoch's order from ``(seed, epoch)`` (the trainer moves the epoch,
    so a resumed run sees the same batches); ``limit`` keeps the first ``limit`` images of a
    seeded class-balanced shuffle. ``root`` and ``download`` as for :func:`find_fashion_mnist`.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be positive, got {limit}")
    images, labels = load_fashion_mnist(split, root, download=download)
    if limit is not None:
        keep = class_balanced_order(labels, seed)[:limit]
        images, labels = images[keep], labels[keep]
    dataset = _FashionBatches(images, labels)
    order: EpochShuffleSampler | SequentialSampler
    if shuffle:
        sampler_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
        order = EpochShuffleSampler(len(dataset), sampler_seed)
    else:
        order = SequentialSampler(dataset)
    return DataLoader(
        dataset, batch_size=None, sampler=BatchSampler(order, batch_size, drop_last=False)
    )
