"""The dataset: images (and labels) of a folder or zip, checked when opened, decoded per item.

Opening reads only each file's header (see :mod:`.decode`) to check modes and shapes: all images must
have the same shape ``[C, H, W]``, square and a power of two (at least :data:`MIN_RESOLUTION`). Pixels
are decoded in ``__getitem__``, so a corrupt image body is reported when it is read (as
:class:`~.errors.ImageDecodeError` naming the file) or by :meth:`ImageDataset.verify`.

With ``use_labels=True`` ``dataset.json`` (see :mod:`.labels`) must label every image and name no file
that is not an image of the dataset (a typo in a path, or an image deleted after labelling, would
otherwise go unnoticed); both are errors listing the first few paths and their count. ``label_dim``
over ``max_classes`` (default :data:`~.labels.DEFAULT_MAX_CLASSES`) is an error.
"""

from __future__ import annotations

import os
import posixpath
from collections import Counter
from typing import Any

import numpy as np
import torch.utils.data

from stylegan2_ada.limits import MIN_RESOLUTION

from .decode import ImageHeader, decode_image, read_image_header
from .errors import LIST_MAX, DatasetError, ImageDecodeError, first_few
from .labels import DEFAULT_MAX_CLASSES, parse_dataset_json
from .sources import IMAGE_EXTENSIONS, LABELS_FILE, READ_ERRORS, open_source

__all__ = ["MIN_RESOLUTION", "ImageDataset", "open_image_dataset"]


class ImageDataset(torch.utils.data.Dataset):
    """Images (and labels) of a folder or zip; see the module docstring for formats and rules.

    ``self[i]`` -> ``(uint8 [C, H, W], float32 [label_dim])``. With ``xflip`` the length doubles and items
    ``n..2n-1`` are items ``0..n-1`` flipped horizontally. ``max_size`` keeps a random subset of that
    many images (before mirroring), chosen with ``random_seed`` the way upstream does
    (``RandomState(seed).shuffle`` of the indices, first ``max_size``, sorted).

    ``max_classes`` bounds ``label_dim`` (see :mod:`.labels`).

    Attributes: ``name`` (folder name or zip stem), ``path``, ``resolution``, ``num_channels``,
    ``image_shape`` ``[C, H, W]``, ``label_dim``, ``label_shape`` ``[label_dim]``, ``has_labels``,
    ``class_names`` (``list[str] | None``), ``xflip``, ``use_labels``, ``max_size``, ``random_seed``,
    ``max_classes``, ``num_images`` (distinct images after the subset), ``init_kwargs`` (JSON-able,
    reopens the same dataset). ``raw_labels``: per item (aligned with ``self[i]``), ``int64 [len]``
    class indices or ``float32 [len, label_dim]`` vectors, ``None`` without labels.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        use_labels: bool = False,
        xflip: bool = False,
        max_size: int | None = None,
        random_seed: int = 0,
        max_classes: int = DEFAULT_MAX_CLASSES,
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.use_labels = bool(use_labels)
        self.xflip = bool(xflip)
        self.max_size = max_size
        self.random_seed = int(random_seed)
        if max_size is not None and (not isinstance(max_size, (int, np.integer)) or max_size < 1):
            raise DatasetError(f"{self.path}: max_size must be a positive integer or None, got {max_size!r}")
        if isinstance(max_classes, bool) or not isinstance(max_classes, (int, np.integer)) or max_classes < 1:
            raise DatasetError(f"{self.path}: max_classes must be a positive integer, got {max_classes!r}")
        self.max_classes = int(max_classes)

        self._source = open_source(self.path)
        base = os.path.basename(self.path.rstrip(os.sep))
        self.name = os.path.splitext(base)[0] if self._source.kind == "zip" else base

        files, self._ignored = self._source.list_files()
        if not files:
            raise DatasetError(self._empty_message())
        self._all_files = files
        shape = self._check_headers(files)
        self.image_shape = list(shape)  # [C, H, W]
        self.num_channels = shape[0]
        self.resolution = shape[1]

        # int64 [n_all] class indices (one-hot encoded per item) or float32 [n_all, label_dim] vectors
        self._raw_all: np.ndarray | None = None
        self.class_names: list[str] | None = None
        self.label_dim = 0
        if self.use_labels:
            self._load_labels(files)
        self.label_shape = [self.label_dim]
        self.has_labels = self.label_dim > 0

        raw_idx = np.arange(len(files), dtype=np.int64)
        if max_size is not None and len(raw_idx) > max_size:
            np.random.RandomState(self.random_seed).shuffle(raw_idx)
            raw_idx = np.sort(raw_idx[:max_size])
        self.num_images = len(raw_idx)
        self._raw_idx = np.concatenate([raw_idx, raw_idx]) if self.xflip else raw_idx  # [len]
        self._flip = np.zeros(len(self._raw_idx), dtype=bool)
        if self.xflip:
            self._flip[self.num_images :] = True
        self._source.close()  # reopened lazily in whichever process reads items

    # -- opening checks ------------------------------------------------------------------------------

    def _empty_message(self) -> str:
        msg = (
            f"{self.path}: no PNG/JPEG images found (searched recursively for {', '.join(IMAGE_EXTENSIONS)})"
        )
        if self._ignored:
            msg += f"; {len(self._ignored)} other files ignored, e.g. {first_few(self._ignored, 3)}"
        return msg

    def _check_headers(self, files: list[str]) -> tuple[int, int, int]:
        headers: list[ImageHeader | None] = []
        problems: list[str] = []
        for rel in files:
            where = self._source.display(rel)
            try:
                try:
                    fp = self._source.open(rel)
                except READ_ERRORS as err:
                    raise ImageDecodeError(where, f"cannot open: {err}") from err
                with fp:
                    headers.append(read_image_header(fp, where))
            except DatasetError as err:
                headers.append(None)
                problems.append(str(err))
        if problems:
            listed = "\n  ".join(problems[:LIST_MAX])
            more = f"\n  ... and {len(problems) - LIST_MAX} more" if len(problems) > LIST_MAX else ""
            raise DatasetError(
                f"{self.path}: {len(problems)} of {len(files)} images cannot be used:\n  {listed}{more}"
            )
        ref = headers[0]
        assert ref is not None
        bad = [i for i, h in enumerate(headers) if h is not None and h.shape != ref.shape]
        if bad:
            other = headers[bad[0]]
            assert other is not None
            raise DatasetError(
                f"{self.path}: images differ in shape (C, H, W): {self._source.display(files[0])} is "
                f"{list(ref.shape)} but {self._source.display(files[bad[0]])} is {list(other.shape)} "
                f"({len(bad)} of {len(files)} images differ from the first). All images need the same size "
                "and channels; repack with `python -m stylegan2_ada.dataset_tool --resolution N`"
            )
        c, h, w = ref.shape
        if h != w:
            raise DatasetError(
                f"{self._source.display(files[0])}: images must be square, this one is {w}x{h} (W x H) "
                "(repack with dataset_tool --resolution N --transform center-crop or pad)"
            )
        if h < MIN_RESOLUTION or h & (h - 1):
            raise DatasetError(
                f"{self._source.display(files[0])}: image size {w}x{h} is not a power of two >= {MIN_RESOLUTION} "
                "(repack with dataset_tool --resolution N)"
            )
        return (c, h, w)

    def _load_labels(self, files: list[str]) -> None:
        where = self._source.display(LABELS_FILE)
        if not self._source.exists(LABELS_FILE):
            nested = [f for f in self._ignored if posixpath.basename(f) == LABELS_FILE]
            hint = (
                f" (found {first_few(nested, 3)} in a subfolder: labels must be at the root)"
                if nested
                else ""
            )
            raise DatasetError(f"use_labels=True but {where} does not exist{hint}")
        info = parse_dataset_json(self._source.read_bytes(LABELS_FILE), where, max_classes=self.max_classes)
        if info.labels is None:
            raise DatasetError(f'{where}: "labels" is null, so there are no labels to use (use_labels=True)')
        self._check_label_paths(info.labels, files, where)
        self.class_names = list(info.class_names) if info.class_names is not None else None
        values = [info.labels[f] for f in files]
        dtype = np.int64 if info.kind == "int" else np.float32
        self._raw_all = np.asarray(values, dtype=dtype)  # int64 [n_all] or float32 [n_all, D]
        self.label_dim = info.label_dim

    def _check_label_paths(self, labels: dict[str, Any], files: list[str], where: str) -> None:
        """Every image has a label and every label names an image, else one error listing both."""
        file_set, ignored = set(files), set(self._ignored)
        unlabelled = [f for f in files if f not in labels]
        unknown = sorted(k for k in labels if k not in file_set)
        if not unlabelled and not unknown:
            return
        problems = []
        if unlabelled:
            problems.append(
                f"{len(unlabelled)} of {len(files)} images have no label: {first_few(unlabelled)}"
            )
        if unknown:
            not_used = sum(k in ignored for k in unknown)
            note = f" ({not_used} of them hidden or not PNG/JPEG, so not used)" if not_used else ""
            problems.append(
                f"{len(unknown)} labels name files that are not in the dataset {self.path}{note}: "
                f"{first_few(unknown)}. Label paths are relative to the dataset root with '/' separators; "
                "remove the entries of deleted images"
            )
        raise DatasetError(f"{where}: " + "; ".join(problems))

    # -- items ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._raw_idx)

    def _index(self, idx: int) -> int:
        i = int(idx)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {idx} out of range for dataset {self.name!r} of length {len(self)}")
        return i

    def relpath(self, idx: int) -> str:
        """Relative path (``/`` separators) of item ``idx``'s image file."""
        return self._all_files[self._raw_idx[self._index(idx)]]

    def load_image(self, idx: int) -> np.ndarray:
        """Item ``idx``'s image as ``uint8 [C, H, W]`` (flipped for the mirrored half)."""
        i = self._index(idx)
        rel = self._all_files[self._raw_idx[i]]
        where = self._source.display(rel)
        try:
            with self._source.open(rel) as fp:
                data = fp.read()
        except READ_ERRORS as err:
            raise ImageDecodeError(where, f"cannot read file: {err}") from err
        arr = decode_image(data, where)  # [H, W, C]
        if list(arr.shape) != [self.image_shape[1], self.image_shape[2], self.image_shape[0]]:
            raise ImageDecodeError(where, "shape changed since the dataset was opened")
        img = arr.transpose(2, 0, 1)  # [C, H, W]
        if self._flip[i]:
            img = img[:, :, ::-1]
        return np.ascontiguousarray(img)

    def get_label(self, idx: int) -> np.ndarray:
        """Item ``idx``'s label: ``float32 [label_dim]`` (one-hot for class labels, ``[0]`` without labels)."""
        j = self._raw_idx[self._index(idx)]
        if self._raw_all is None:
            return np.zeros([0], dtype=np.float32)
        if self._raw_all.ndim == 2:
            return self._raw_all[j].copy()
        one_hot = np.zeros([self.label_dim], dtype=np.float32)
        one_hot[self._raw_all[j]] = 1
        return one_hot

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        return self.load_image(idx), self.get_label(idx)

    @property
    def raw_labels(self) -> np.ndarray | None:
        if self._raw_all is None:
            return None
        return self._raw_all[self._raw_idx].copy()

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return dict(
            path=self.path,
            use_labels=self.use_labels,
            xflip=self.xflip,
            max_size=self.max_size,
            random_seed=self.random_seed,
            max_classes=self.max_classes,
        )

    def verify(self) -> None:
        """Decode every image (slow); raise one :class:`DatasetError` listing all corrupt files."""
        problems = []
        for i in range(self.num_images):
            try:
                self.load_image(i)
            except DatasetError as err:
                problems.append(str(err))
        if problems:
            listed = "\n  ".join(problems[:LIST_MAX])
            more = f"\n  ... and {len(problems) - LIST_MAX} more" if len(problems) > LIST_MAX else ""
            raise DatasetError(f"{self.path}: {len(problems)} images cannot be decoded:\n  {listed}{more}")

    def close(self) -> None:
        """Close the zip file handle of this process (reopened on the next read)."""
        self._source.close()

    # -- reporting -----------------------------------------------------------------------------------

    def class_counts(self) -> dict[int, int] | None:
        """Images per class index over the distinct images (before mirroring); ``None`` unless class labels."""
        if self._raw_all is None or self._raw_all.ndim != 1:
            return None
        counts = np.bincount(self._raw_all[self._raw_idx[: self.num_images]], minlength=self.label_dim)
        return {c: int(n) for c, n in enumerate(counts)}

    def _class_name(self, c: int) -> str:
        return self.class_names[c] if self.class_names is not None and c < len(self.class_names) else str(c)

    def describe(self) -> str:
        """A multi-line summary for logs: source, counts, shape, labels and images per class."""
        kind = self._source.kind
        lines = [f"Dataset {self.name!r} ({kind} {self.path})"]
        n_all = len(self._all_files)
        count = f"{self.num_images} images"
        if self.num_images < n_all:
            count += f" (random subset of {n_all}, seed {self.random_seed})"
        if self.xflip:
            count += f", mirrored (x-flip) -> {len(self)} items"
        lines.append("  " + count)
        c, h, w = self.image_shape
        lines.append(f"  shape [C, H, W] = [{c}, {h}, {w}] ({'grayscale' if c == 1 else 'RGB'}, uint8)")
        counts = self.class_counts()
        if not self.has_labels:
            lines.append("  labels: none" + ("" if self.use_labels else " (use_labels=False)"))
        elif counts is None:
            lines.append(f"  labels: float vectors of length {self.label_dim}")
        else:
            lines.append(f"  labels: {self.label_dim} classes (one-hot)")
            for cls, num in counts.items():
                name = f" {self.class_names[cls]}" if self.class_names and cls < len(self.class_names) else ""
                lines.append(f"    class {cls}{name}: {num}")
        if self._ignored:
            exts = Counter(posixpath.splitext(f)[1].lower() or "(none)" for f in self._ignored)
            lines.append(
                f"  ignored {len(self._ignored)} non-image/hidden files ("
                + ", ".join(f"{e}: {n}" for e, n in sorted(exts.items()))
                + ")"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        text = f"ImageDataset({self.name!r}, {len(self)} items, [{c}, {h}, {w}]"
        counts = self.class_counts()
        if counts is not None:
            text += ", classes {" + ", ".join(f"{self._class_name(k)}: {v}" for k, v in counts.items()) + "}"
        elif self.has_labels:
            text += f", label_dim={self.label_dim}"
        return text + (", xflip" if self.xflip else "") + ")"


def open_image_dataset(
    path: str | os.PathLike[str],
    *,
    use_labels: bool = False,
    xflip: bool = False,
    max_size: int | None = None,
    random_seed: int = 0,
    max_classes: int = DEFAULT_MAX_CLASSES,
) -> ImageDataset:
    """Open a folder (recursive) or ``.zip`` of images as an :class:`ImageDataset` (see its docstring)."""
    return ImageDataset(
        path,
        use_labels=use_labels,
        xflip=xflip,
        max_size=max_size,
        random_seed=random_seed,
        max_classes=max_classes,
    )
