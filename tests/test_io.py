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


# -- the destination is checked first, failures are typed ----------------------------------
import errno  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from mixq.errors import OutputError  # noqa: E402
from mixq.io import check_writable, remove_stale_temporaries  # noqa: E402

needs_non_root = pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders"
)


@needs_non_root
def test_read_only_folder_is_refused_before_writing(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied") as info:
            check_writable(folder / "sub" / "x.txt")
        assert str(folder) in str(info.value)
        called: list[Path] = []
        with pytest.raises(OutputError):
            atomic_write(folder / "x.txt", called.append)
        assert called == []  # the expensive writer never ran
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


def test_a_file_where_a_folder_is_expected(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("i am a file")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_writable(tmp_path / "out" / "model.safetensors")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_writable(tmp_path / "out", folder=True)
    (tmp_path / "dir").mkdir()
    with pytest.raises(OutputError, match="a folder, not a file"):
        atomic_write_text(tmp_path / "dir", "x")
    assert (tmp_path / "out").read_text() == "i am a file"


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_full_disk_is_named_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "write":

        def write(tmp: Path) -> None:
            tmp.write_bytes(b"partial")
            no_space()

    else:
        monkeypatch.setattr(os, "fsync", no_space)

        def write(tmp: Path) -> None:
            tmp.write_bytes(b"new")

    with pytest.raises(OutputError, match="disk full") as info:
        atomic_write(path, write)
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_torch_disk_full_message_is_translated(tmp_path: Path) -> None:
    def torch_like(tmp: Path) -> None:
        tmp.write_bytes(b"x")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    with pytest.raises(OutputError, match=r"cannot write .*file\.pt: (disk full|write failed)"):
        atomic_write(tmp_path / "file.pt", torch_like)
    assert list(tmp_path.iterdir()) == []


def test_other_errors_of_the_writer_pass_through(tmp_path: Path) -> None:
    def bug(tmp: Path) -> None:
        raise ValueError("not a disk problem")

    with pytest.raises(ValueError, match="not a disk problem"):
        atomic_write(tmp_path / "f", bug)


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".checkpoint.pt.{dead_pid}-deadbeef.tmp"
    live = tmp_path / f".checkpoint.pt.{os.getppid()}-cafebabe.tmp"  # a running process
    legacy_old = tmp_path / ".checkpoint.pt.abc123xy.tmp"
    legacy_new = tmp_path / ".checkpoint.pt.zzz999qq.tmp"
    other = tmp_path / f".other.pt.{dead_pid}-deadbeef.tmp"
    for tmp in (stale, live, legacy_old, legacy_new, other):
        tmp.write_bytes(b"half")
    os.utime(legacy_old, (1.0, 1.0))
    atomic_write_text(tmp_path / "checkpoint.pt", "new")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["checkpoint.pt", live.name, legacy_new.name, other.name])
    assert remove_stale_temporaries(tmp_path / "checkpoint.pt") == []


def test_files_get_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640


def test_file_and_folder_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    atomic_write_text(tmp_path / "a.txt", "x")
    assert len(synced) == 2


def test_read_only_file_system_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly())
    with pytest.raises(OutputError, match="read-only file system"):
        atomic_write_text(tmp_path / "a.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_permission_denied_while_writing_is_named(tmp_path: Path) -> None:
    def denied(tmp: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))

    with pytest.raises(OutputError, match="permission denied"):
        atomic_write(tmp_path / "a.txt", denied)


def test_unwritable_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same check as the read-only folder test, for runs as root (who may write anywhere).
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(OutputError, match=f"permission denied on {tmp_path}"):
        check_writable(tmp_path / "new" / "a.txt")
