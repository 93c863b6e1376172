"""The one file writer: check the destination first, write a temporary, fsync, rename.

``check_writable(path)`` says before any expensive work whether ``path`` can be written
(its folder exists or can be created, is a folder, is writable, the disk is not full) and
raises :class:`~mixq.errors.OutputError` naming the path and the cause. ``atomic_write``
writes ``path`` through a temporary ``.<name>.<pid>-<random>.tmp`` in the same folder,
fsyncs the file and the folder, renames it over ``path`` and removes the temporary on any
failure (a ``kill -9`` cannot run that cleanup: the next write to the same destination
removes the temporaries of processes that no longer run). Files get the mode the umask
gives (``0o666 & ~umask``), like any file a program creates. Disk full, read-only and
permission errors become ``OutputError`` with the path; ``OutputError`` is an ``OSError``
too, so generic handlers still catch it.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> atomic_write_text(folder / "a" / "b.txt", "hello")
>>> (folder / "a" / "b.txt").read_text()
'hello'
>>> try:
...     check_writable(folder / "a" / "b.txt" / "c.txt")
... except OutputError as exc:
...     print(str(exc).replace(str(folder), "F"))
cannot write F/a/b.txt/c.txt: F/a/b.txt is a file, not a folder
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from mixq.errors import OutputError

# Less free space than this and a write is refused before it starts (a checkpoint of the
# models here is a few MiB; a write that cannot finish would only fail later).
MIN_FREE_BYTES = 1 << 20
# Temporaries named by the older writer (no pid in the name) count as stale after this.
LEGACY_TMP_AGE_S = 600.0

_CAUSES = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EISDIR: "it is a folder",
}
# What torch.save and safetensors say when the disk fills under them.
_WRITE_FAILURE_TEXTS = ("unexpected pos", "file write failed", "No space left")


def check_writable(path: str | Path, *, folder: bool = False, need_bytes: int = 0) -> None:
    """Raise :class:`OutputError` unless the file ``path`` (a folder with ``folder=True``)
    can be written: nothing on disk changes, no folder is created."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a folder, not a file" if path.is_dir() else "a file, not a folder"
        raise OutputError(f"cannot write {path}: it is {kind}")
    ancestor = path if folder and path.is_dir() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {path}: {ancestor} is a file, not a folder")
    if _read_only(ancestor):
        raise OutputError(f"cannot write {path}: {ancestor} is on a read-only file system")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: permission denied on {ancestor}")
    free = _free_bytes(ancestor)
    if free is not None and free < max(need_bytes, MIN_FREE_BYTES):
        raise OutputError(f"cannot write {path}: disk full ({free} bytes free on {ancestor})")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path``; on failure leave nothing
    (an existing ``path`` keeps its old content)."""
    path = Path(path)
    check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (_output_error(path, exc) or exc) from None
    remove_stale_temporaries(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError | RuntimeError) and not isinstance(exc, OutputError):
            translated = _output_error(path, exc)
            if translated is not None:
                raise translated from exc
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of ``path`` that a killed writer left; return them."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{_glob_escape(path.name)}.*.tmp"):
        if _is_stale(tmp, path.name):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _is_stale(tmp: Path, name: str) -> bool:
    tag = tmp.name[len(name) + 2 : -len(".tmp")]
    pid_text, dash, _ = tag.partition("-")
    if dash and pid_text.isdigit():
        return not _process_runs(int(pid_text))
    try:  # the older writer's mkstemp name: no pid to ask
        return time.time() - tmp.stat().st_mtime > LEGACY_TMP_AGE_S
    except OSError:
        return False


def _process_runs(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _output_error(path: Path, exc: BaseException) -> OutputError | None:
    if isinstance(exc, OSError):
        cause = _CAUSES.get(exc.errno or 0)
        return None if cause is None else OutputError(f"cannot write {path}: {cause}")
    text = str(exc)
    if any(marker in text for marker in _WRITE_FAILURE_TEXTS):
        free = _free_bytes(path.parent)
        cause = "disk full" if free is not None and free < MIN_FREE_BYTES else "write failed"
        return OutputError(f"cannot write {path}: {cause} ({text.splitlines()[0][:120]})")
    return None


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    # A rename is durable only once its folder is; some file systems cannot fsync folders.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    try:  # Linux says it without changing it; os.umask must set it to read it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
