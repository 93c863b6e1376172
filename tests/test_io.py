"""Atomic writes: a temporary file, then a rename; nothing left behind on failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixq.io import atomic_write, atomic_write_text


def test_write_and_replace(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "file.txt"
    atomic_write_text(path, "one")
    assert path.read_text() == "one"
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["file.txt"]


def test_temporary_lives_beside_the_target(tmp_path: Path) -> None:
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_text("x")

    atomic_write(tmp_path / "a.bin", write)
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".a.bin.")
    assert not seen[0].exists()


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failure_leaves_nothing_and_keeps_the_old_file(
    tmp_path: Path, error: BaseException
) -> None:
    path = tmp_path / "file.txt"

    def failing(tmp: Path) -> None:
        tmp.write_text("partial")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, failing)
    assert list(tmp_path.iterdir()) == []
    path.write_text("old")
    with pytest.raises(type(error)):
        atomic_write(path, failing)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]
