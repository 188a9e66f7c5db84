"""Atomic file writes: readers see the old file or the complete new one, never a partial file.

Every output the toolkit writes (snapshots, image grids, generated images, JSON, converted PNGs, reports)
goes through :func:`atomic_write` or, for writers that need a path of their own, :func:`atomic_path`: the
data goes to a hidden temporary file in the destination folder, is optionally forced to disk (fsync),
gets the usual permissions (``0o666`` minus the umask) and is renamed over the destination. On any error the temporary file is removed and the destination is left
untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

__all__ = ["atomic_path", "atomic_write", "default_file_mode", "write_json_atomic"]


def default_file_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give a new file: ``0o666`` minus the umask.

    The umask is read from ``/proc/self/status`` where the system has it; elsewhere it is read by
    setting and restoring it (which would briefly affect files other threads create meanwhile).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _temp_beside(path: str) -> tuple[int, str]:
    """A new hidden temporary file in ``path``'s folder (created if needed): (open fd, its path).

    Created like ``mkstemp`` (exclusive, unpredictable name) but with mode ``0o666``, so the umask gives
    it the usual permissions and nothing has to fix them afterwards.
    """
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def _discard(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path`` atomically.

    For writers that insist on a file name (e.g. ``safetensors.torch.save_file``). The folder of ``path``
    is created if needed.
    """
    path = os.fspath(path)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as file:
                os.fsync(file.fileno())
        os.chmod(tmp, default_file_mode())  # some writers (safetensors) recreate the file as 0600
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[BinaryIO], Any], *, fsync: bool = False
) -> None:
    """Write ``path`` through ``write(binary_file)`` atomically (see the module docstring).

    ``fsync=True`` also forces the data to disk before the rename (snapshots, datasets); small,
    re-creatable outputs skip it for speed.
    """
    path = os.fspath(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            if fsync:
                os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented UTF-8 JSON (with a final newline) to ``path`` atomically."""
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
