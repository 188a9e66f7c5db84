"""What goes wrong when reading a dataset, and how messages list many names."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DatasetError", "ImageDecodeError", "first_few", "LIST_MAX"]

LIST_MAX = 5  # how many names a message lists before "... (N more)"


class DatasetError(ValueError):
    """A dataset cannot be used; the message names the file (or path) and the problem."""


class ImageDecodeError(DatasetError):
    """One image file cannot be read or decoded (truncated, corrupt, unsupported, absurd header).

    ``path`` names the file as messages show it (a file path, or ``"rel in archive.zip"``); ``reason``
    says what is wrong. ``str(err)`` is ``"{path}: {reason}"``. Raised by header reading, decoding and
    :meth:`ImageDataset.__getitem__ <stylegan2_ada.dataset.ImageDataset.__getitem__>`, so a loader can
    skip and report the one bad image.

    Given one argument it is the whole message (``reason`` is then empty): that is how a DataLoader
    re-raises a worker's exception in the main process, which so keeps its type.
    """

    def __init__(self, path: str, reason: str = "") -> None:
        super().__init__(f"{path}: {reason}" if reason else path)
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[ImageDecodeError], tuple[str, str]]:
        # Survives pickling (multiprocessing) with both fields.
        return (type(self), (self.path, self.reason))


def first_few(names: Sequence[str], limit: int = LIST_MAX) -> str:
    """``a, b, c, ... (7 more)``: the first ``limit`` names and how many were left out."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
