"""``--data``: the user's own data for any command, in one of three forms.

- a tensor file (``.pt``/``.pth`` read with ``weights_only``, or ``.safetensors``) holding
  ``inputs`` and ``labels`` (both splits), or ``train_inputs``/``train_labels`` and
  ``test_inputs``/``test_labels``;
- the standard CIFAR-10 python archive (``cifar-10-python.tar.gz``) or its extracted
  ``cifar-10-batches-py`` folder: read with an unpickler that builds only NumPy arrays,
  so nothing in the file can run code;
- a folder of images, one sub-folder per class (sorted names are labels 0, 1, ...), with
  optional ``train/`` and ``test/`` (or ``val/``) splits; images scaled to [0, 1].

Inputs are used as stored (CIFAR and images as float in [0, 1], channels first): normalise
inside the model if it expects normalised inputs. Subsets (``limit``) are class-balanced.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from mixq.data import Split
from mixq.data.subsets import class_balanced_order
from mixq.errors import DataError

Arrays = dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> (inputs, labels)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def read_data(path: Path) -> Arrays:
    """``{"train": (inputs, labels), "test": (inputs, labels)}`` from any supported form."""
    if not path.exists():
        raise DataError(f"data not found: {path}")
    if path.is_file() and path.suffix in (".pt", ".pth", ".safetensors"):
        return _tensor_file(path)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return _cifar_archive(path)
    if path.is_dir() and (path / "data_batch_1").is_file():
        return _cifar_folder(path)
    if path.is_dir():
        return _image_folder(path)
    raise DataError(
        f"{path}: not a tensor file (.pt/.safetensors), a CIFAR-10 python archive or a "
        "folder of images"
    )


def loader_factory(path: Path) -> tuple[Any, tuple[int, ...]]:
    """A ``ModelSpec.make_loader`` over ``path``'s data, and the shape of one input."""
    arrays = read_data(path)
    shape = tuple(arrays["train"][0].shape[1:])
    return partial(_loader, arrays), shape


def _loader(
    arrays: Arrays,
    root: Path | None,
    split: Split,
    batch_size: int,
    train: bool,
    limit: int | None,
    seed: int,
) -> DataLoader[tuple[torch.Tensor, ...]]:
    inputs, labels = arrays["train" if split == "train" else "test"]
    if limit is not None and limit < len(labels):
        order = torch.from_numpy(class_balanced_order(labels.numpy(), seed)[:limit].copy())
        inputs, labels = inputs[order], labels[order]
    generator = torch.Generator().manual_seed(seed)
    dataset = TensorDataset(inputs, labels)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, generator=generator)


def _checked(path: Path, inputs: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not (torch.is_tensor(inputs) and torch.is_tensor(labels)):
        raise DataError(f"{path}: inputs and labels must be tensors")
    if inputs.ndim < 2 or labels.ndim != 1 or len(inputs) != len(labels) or not len(labels):
        raise DataError(
            f"{path}: want inputs (N, ...) and labels (N,), got {tuple(inputs.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.min() < 0:
        raise DataError(f"{path}: labels must be non-negative integers")
    if not inputs.dtype.is_floating_point:
        inputs = inputs.float()
    if not torch.isfinite(inputs).all():
        raise DataError(f"{path}: inputs hold NaN or Inf")
    return inputs.float(), labels.long()


def _tensor_file(path: Path) -> Arrays:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(path)
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure is a bad data file
        raise DataError(f"cannot read tensor file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: want a dict of tensors, got {type(data).__name__}")
    if {"inputs", "labels"} <= data.keys():
        both = _checked(path, data["inputs"], data["labels"])
        return {"train": both, "test": both}
    needed = {"train_inputs", "train_labels", "test_inputs", "test_labels"}
    if not needed <= data.keys():
        raise DataError(
            f"{path}: want keys inputs/labels or {sorted(needed)}, found {sorted(data)}"
        )
    return {
        split: _checked(path, data[f"{split}_inputs"], data[f"{split}_labels"])
        for split in ("train", "test")
    }


class _ArraysOnly(pickle.Unpickler):
    """Builds NumPy arrays and plain containers; refuses every other global."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise DataError(f"CIFAR-10 batch refers to {module}.{name}: refused (not data)")
        return super().find_class(module, name)


def _cifar_batch(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"CIFAR-10 batch {name} is not readable: {exc}") from None
    return images, labels


def _cifar_arrays(batches: dict[str, bytes], where: Path) -> Arrays:
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    out: Arrays = {}
    for split, wanted in names.items():
        missing = [n for n in wanted if n not in batches]
        if missing:
            raise DataError(f"{where}: CIFAR-10 batches missing: {', '.join(missing)}")
        parts = [_cifar_batch(batches[n], n) for n in wanted]
        images = torch.from_numpy(np.concatenate([p[0] for p in parts])).float() / 255
        out[split] = (images, torch.from_numpy(np.concatenate([p[1] for p in parts])))
    return out


def _cifar_folder(path: Path) -> Arrays:
    wanted = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return _cifar_arrays({n: (path / n).read_bytes() for n in wanted if (path / n).is_file()}, path)


def _cifar_archive(path: Path) -> Arrays:
    batches: dict[str, bytes] = {}
    try:
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                name = Path(member.name).name
                if member.isfile() and (name.startswith("data_batch_") or name == "test_batch"):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        batches[name] = handle.read()
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot read archive {path}: {exc}") from None
    return _cifar_arrays(batches, path)


def _image_folder(path: Path) -> Arrays:
    splits = {"train": path / "train", "test": path / "test"}
    if not splits["test"].is_dir() and (path / "val").is_dir():
        splits["test"] = path / "val"
    if not (splits["train"].is_dir() and splits["test"].is_dir()):
        splits = {"train": path, "test": path}
    classes = sorted(p.name for p in splits["train"].iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{path}: no class folders (want <class>/<image> or train/<class>/...)")
    return {split: _read_images(folder, classes) for split, folder in splits.items()}


def _read_images(folder: Path, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image, UnidentifiedImageError

    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        for file in sorted((folder / name).glob("*")):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as image:
                    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"cannot read image {file}: {exc}") from None
            if images and array.shape != images[0].shape:
                raise DataError(
                    f"{file} is {array.shape[1]}x{array.shape[0]}, the others "
                    f"{images[0].shape[1]}x{images[0].shape[0]}: resize them to one size"
                )
            images.append(array)
            labels.append(label)
    if not images:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return stacked.contiguous(), torch.tensor(labels)
