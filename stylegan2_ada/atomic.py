"""Atomic file writes: readers see the old file or the complete new one, never a partial file.

Every output the toolkit writes (snapshots, image grids, generated images, JSON, converted PNGs, reports)
goes through :func:`atomic_write` or, for writers that need a path of their own, :func:`atomic_path`: the
data goes to a hidden temporary file in the destination folder, is optionally forced to disk (fsync),
gets the usual permissions (``0o666`` minus the umask) and is renamed over the destination. On any error
the temporary file is removed and the destination is left untouched.

Temporary names. Ours are ``.<destination name>.<12 lowercase hex digits>.tmp``
(:data:`TEMP_NAME_RE`). Writers given a path by :func:`atomic_path` may add their own: the safetensors
library writes to ``.tmp<6 letters or digits>`` (the Rust ``tempfile`` crate's default,
:data:`SAFETENSORS_TEMP_NAME_RE`) in the same folder and renames it over ours. A process killed while
writing leaves such files behind; :func:`clean_stale_temp_files` removes them on a later run (only
files of exactly these two forms, and only once they are old enough not to belong to a live writer).

Also here: the two writers every entry point shares, :func:`write_json_atomic` (strict JSON: NaN and
infinity are refused, as JSON has no such numbers) and :func:`write_png_atomic` (8-bit ``L`` or ``RGB``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "SAFETENSORS_TEMP_NAME_RE",
    "STALE_TEMP_AGE_S",
    "TEMP_NAME_RE",
    "atomic_path",
    "atomic_write",
    "clean_stale_temp_files",
    "default_file_mode",
    "is_temp_name",
    "write_json_atomic",
    "write_png_atomic",
]

#: Our temporary files: ``.<destination name>.<12 lowercase hex digits>.tmp``.
TEMP_NAME_RE = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")
#: The safetensors library's temporary files (Rust ``tempfile`` crate): ``.tmp<6 letters or digits>``.
SAFETENSORS_TEMP_NAME_RE = re.compile(r"\.tmp[A-Za-z0-9]{6}")
#: Default age (seconds since the last write) from which a temporary file counts as left behind. An hour:
#: longer than any live writer goes without writing (a multi-GB snapshot's fsync included).
STALE_TEMP_AGE_S = 3600.0


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
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")  # TEMP_NAME_RE
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
    """Write ``data`` as indented UTF-8 JSON (with a final newline) to ``path`` atomically.

    Strict JSON: a NaN or infinite float raises ``ValueError`` naming the file (Python would otherwise
    write ``NaN``/``Infinity``, which other JSON readers reject), and nothing is written.
    """
    try:
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)}: cannot be written as JSON: {exc}") from exc
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_png_atomic(path: str | os.PathLike[str], pixels: np.ndarray) -> None:
    """Write uint8 pixels as a PNG, atomically: ``[H, W]`` or ``[H, W, 1]`` as 8-bit ``L``, ``[H, W, 3]``
    as ``RGB``.

    Raises:
        ValueError: another dtype or shape (nothing is written).
    """
    from PIL import Image  # local: keeps this module light for writers that never save images

    if pixels.dtype != np.uint8 or not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (1, 3))):
        raise ValueError(
            f"{os.fspath(path)}: cannot save {pixels.dtype} pixels of shape {pixels.shape} as PNG "
            "(uint8 [H, W], [H, W, 1] or [H, W, 3] only)"
        )
    image = Image.fromarray(pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def is_temp_name(name: str) -> bool:
    """Whether a file name has the form of our or the safetensors library's temporary files."""
    return bool(TEMP_NAME_RE.fullmatch(name) or SAFETENSORS_TEMP_NAME_RE.fullmatch(name))


def clean_stale_temp_files(
    folder: str | os.PathLike[str], older_than_s: float = STALE_TEMP_AGE_S
) -> list[Path]:
    """Remove temporary files that killed writers left in ``folder`` (not its subfolders); returns them.

    Removes only regular files (not links or folders) whose name matches :data:`TEMP_NAME_RE` or
    :data:`SAFETENSORS_TEMP_NAME_RE` and that were last modified at least ``older_than_s`` seconds ago,
    so a temporary file another process is still writing is left alone. A missing folder is no
    error; a file that cannot be removed is skipped (it is left for a later run).
    """
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    cutoff = time.time() - older_than_s
    removed: list[Path] = []
    for entry in entries:
        if not is_temp_name(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_mtime > cutoff:
                continue
            os.unlink(entry.path)
        except OSError:  # vanished meanwhile, or not ours to remove: leave it
            continue
        removed.append(Path(entry.path))
    return removed
