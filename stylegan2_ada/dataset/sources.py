"""Where a dataset's files are: a folder (searched recursively) or a zip archive.

Files are named by their path relative to the root with ``/`` separators, on every OS and for a folder
and its zip alike. :meth:`ImageSource.list_files` splits them into images (``.png``, ``.jpg``,
``.jpeg``, any case) and ignored files (hidden files and folders, whose name starts with ``.``,
``__MACOSX``, and everything else); ``dataset.json`` at the root is neither.
"""

from __future__ import annotations

import os
import posixpath
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO, Any

from .errors import DatasetError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LABELS_FILE",
    "READ_ERRORS",
    "ImageSource",
    "open_source",
    "normalize_relpath",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
LABELS_FILE = "dataset.json"
# What reading a file of a folder or zip can raise: I/O errors, a damaged zip member (bad CRC, bad
# deflate stream, cut short).
READ_ERRORS = (OSError, zipfile.BadZipFile, zlib.error, EOFError)


def normalize_relpath(path: str) -> str:
    """``a\\b/./c.png`` -> ``a/b/c.png`` (the form the file listing uses)."""
    path = posixpath.normpath(path.replace("\\", "/"))
    return path[2:] if path.startswith("./") else path


def _is_hidden(relpath: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in relpath.split("/"))


class ImageSource:
    """Read-only access to the files of a folder or zip, by relative path with ``/`` separators.

    ``path`` is the absolute path of the folder or zip; ``kind`` is ``'folder'`` or ``'zip'``.
    """

    path: str
    kind: str

    def list_files(self) -> tuple[list[str], list[str]]:
        """Return ``(images, ignored)``: sorted relative paths of image files, and of other files."""
        images, ignored = [], []
        for rel in self._all_files():
            if rel == LABELS_FILE:
                continue
            if not _is_hidden(rel) and rel.lower().endswith(IMAGE_EXTENSIONS):
                images.append(rel)
            else:
                ignored.append(rel)
        return sorted(images), sorted(ignored)

    def display(self, rel: str) -> str:
        """A human-readable name for ``rel`` to put in messages."""
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def open(self, rel: str) -> IO[bytes]:
        """A binary file object for ``rel`` (close it after use)."""
        raise NotImplementedError

    def read_bytes(self, rel: str) -> bytes:
        """The whole content of ``rel``; :class:`DatasetError` naming it when it cannot be read."""
        try:
            with self.open(rel) as fp:
                return fp.read()
        except READ_ERRORS as err:
            raise DatasetError(f"{self.display(rel)}: cannot read file: {err}") from err

    def close(self) -> None:
        """Release open handles (they are reopened on demand)."""

    def _all_files(self) -> Iterator[str]:
        raise NotImplementedError


class _FolderSource(ImageSource):
    kind = "folder"

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def _all_files(self) -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(self.path):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.path)
            for fname in filenames:
                rel = fname if rel_dir == "." else os.path.join(rel_dir, fname)
                yield rel.replace(os.sep, "/")

    def _fs_path(self, rel: str) -> str:
        return os.path.join(self.path, *rel.split("/"))

    def display(self, rel: str) -> str:
        return self._fs_path(rel)

    def exists(self, rel: str) -> bool:
        return os.path.isfile(self._fs_path(rel))

    def open(self, rel: str) -> IO[bytes]:
        return open(self._fs_path(rel), "rb")


class _ZipSource(ImageSource):
    """A zip archive, opened lazily and once per process (never shared across fork or pickle)."""

    kind = "zip"

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None
        self._get_zip()  # fail early on a corrupt archive

    def _get_zip(self) -> zipfile.ZipFile:
        if self._zip is not None and self._zip_pid != os.getpid():
            # Inherited through fork: its file offset is shared with the parent, so never read through
            # it. Closing it here releases only this process's copy of the descriptor.
            stale, self._zip = self._zip, None
            try:
                stale.close()
            except OSError:
                pass
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path, "r")
            except (OSError, zipfile.BadZipFile) as err:
                raise DatasetError(f"{self.path}: not a readable zip archive: {err}") from err
            self._zip_pid = os.getpid()
        return self._zip

    def _all_files(self) -> Iterator[str]:
        seen = set()
        for info in self._get_zip().infolist():
            if not info.is_dir() and info.filename not in seen:
                seen.add(info.filename)
                yield info.filename

    def display(self, rel: str) -> str:
        return f"{rel} in {self.path}"

    def exists(self, rel: str) -> bool:
        try:
            self._get_zip().getinfo(rel)
            return True
        except KeyError:
            return False

    def open(self, rel: str) -> IO[bytes]:
        return self._get_zip().open(rel, "r")

    def close(self) -> None:
        if self._zip is not None and self._zip_pid == os.getpid():
            self._zip.close()
        self._zip = None
        self._zip_pid = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_zip"] = None
        state["_zip_pid"] = None
        return state


def open_source(path: str | os.PathLike[str]) -> ImageSource:
    """Open a folder or a ``.zip`` file (any other file is rejected) for reading."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _FolderSource(path)
    if os.path.isfile(path):
        if not path.lower().endswith(".zip") and not zipfile.is_zipfile(path):
            raise DatasetError(
                f"{path}: expected a folder of images or a .zip archive, got another kind of file"
            )
        return _ZipSource(path)
    raise DatasetError(f"{path}: no such folder or zip file")
