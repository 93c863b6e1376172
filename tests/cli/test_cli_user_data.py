"""The user's own model (``--model pkg.module:factory``) and data (``--data``)."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mixq.cli._data import read_data
from mixq.cli.main import main
from mixq.errors import DataError

MODULE = """
from torch import nn

def tiny():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )
"""


@pytest.fixture
def user_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "my_models_for_mixq.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    from my_models_for_mixq import tiny  # type: ignore[import-not-found]

    torch.save(tiny().state_dict(), tmp_path / "w.pt")
    labels = torch.arange(40) % 4
    inputs = torch.rand(40, 3, 8, 8) + labels.view(-1, 1, 1, 1) * 0.5
    torch.save({"inputs": inputs, "labels": labels}, tmp_path / "data.pt")
    return tmp_path


def test_a_user_model_on_a_tensor_file_quantises_and_evaluates(
    user_project: Path, capsys: pytest.CaptureFixture
) -> None:
    common = ["--model", "my_models_for_mixq:tiny", "--data", "data.pt", "--batch-size", "10"]
    code = main(["quantize", "--weights", "w.pt", *common, "--calib-images", "20", "-o", "q"])
    assert code == 0, capsys.readouterr().err
    checkpoint = user_project / "q" / "quantized.safetensors"
    assert main(["eval", str(checkpoint), *common, "-q"]) == 0
    assert "top-1" in capsys.readouterr().out
    # The checkpoint names the user's module; it is never imported on the file's word.
    assert main(["eval", str(checkpoint), "--data", "data.pt", "-q"]) == 1
    assert "pass --model my_models_for_mixq:tiny" in capsys.readouterr().err


def test_a_user_model_without_data_or_with_a_bad_name(
    user_project: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["quantize", "--weights", "w.pt", "-o", "q", "--model"]
    assert main([*args, "my_models_for_mixq:tiny"]) == 1
    assert "pass --data" in capsys.readouterr().err
    assert main([*args, "my_models_for_mixq:nothing", "--data", "data.pt"]) == 1
    assert "no callable 'nothing'" in capsys.readouterr().err
    assert main([*args, "no_such_module_xyz:f", "--data", "data.pt"]) == 1
    assert "cannot import" in capsys.readouterr().err


def test_an_image_folder_with_splits(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("test", 2)):
        for label, name in enumerate(("cat", "dog")):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.full((6, 5, 3), 40 * label + i, dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    data = read_data(tmp_path)
    inputs, labels = data["train"]
    assert inputs.shape == (6, 3, 6, 5) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert inputs[4, 0, 0, 0].item() == pytest.approx(41 / 255)
    assert data["test"][0].shape == (4, 3, 6, 5)


def _batch(count: int, offset: int) -> bytes:
    images = (np.arange(count * 3072) % 251).astype(np.uint8).reshape(count, 3072)
    return pickle.dumps({b"data": images, b"labels": [(offset + i) % 10 for i in range(count)]})


def test_a_cifar10_python_archive(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            payload = _batch(4, int(name[-1]) if name[-1].isdigit() else 0)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    data = read_data(archive)
    assert data["train"][0].shape == (20, 3, 32, 32) and data["test"][0].shape == (4, 3, 32, 32)
    assert data["train"][0].max().item() == pytest.approx(250 / 255)
    assert data["train"][1][:4].tolist() == [1, 2, 3, 4]


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_a_cifar_batch_that_would_run_code_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    with pytest.raises(DataError, match="refused"):
        read_data(folder)
    assert "pwned" not in capsys.readouterr().out


def test_a_tensor_file_with_the_wrong_keys(tmp_path: Path) -> None:
    torch.save({"x": torch.zeros(2, 3)}, tmp_path / "d.pt")
    with pytest.raises(DataError, match="want keys inputs/labels"):
        read_data(tmp_path / "d.pt")
