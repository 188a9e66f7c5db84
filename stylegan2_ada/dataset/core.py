"""Training images from a folder (searched recursively) or a zip archive, with optional labels.

Images
    PNG or JPEG files (``.png``, ``.jpg``, ``.jpeg``, any case), recognised by their content.
    Supported: 8- or 16-bit grayscale (1 channel) or RGB (3 channels) PNG, and 8-bit grayscale or RGB
    JPEG. All images must have the same shape, square and a power of two (at least 4). Palette,
    alpha (LA/RGBA), CMYK and 1/2/4-bit images are rejected with a message saying what is supported.
    16-bit values are scaled to 8 bits by the full 16-bit range: ``y = round(x / 257)``, computed
    exactly as ``(x + 128) // 257`` (0 -> 0, 65535 -> 255; there are no ties). JPEG pixels are used
    as stored (an EXIF orientation tag is not applied).
    Files are sorted by their relative path with ``/`` separators, so the order is the same on every
    machine and for a folder and its zip. Hidden files and folders (name starting with ``.``) and
    ``__MACOSX`` are ignored, as is every file that is not a PNG/JPEG (counted in :meth:`describe`).

Opening a dataset reads only each file's header (PNG IHDR, or Pillow's lazy JPEG open) to check
modes and shapes; pixels are decoded in ``__getitem__`` (pyspng for PNG when installed, else Pillow;
Pillow for JPEG). A corrupt image body is therefore reported when it is read (or by :meth:`verify`).

Labels (``dataset.json`` at the root of the folder or zip; read only when ``use_labels=True``)
    * upstream format: ``{"labels": [["sub/a.png", 1], ...]}``; ``"labels": null`` means no labels;
    * flat format (the original SpineGAN fork's): ``{"sub/a.png": 1, ...}``;
    * optional ``"class_names": ["normal", "abnormal"]`` in either format;
    * a label is an integer class index (one-hot encoded; ``label_dim = max + 1``, or
      ``len(class_names)`` if that is larger) or a list of numbers (kept as a float vector; all of the
      same length). Scalar floats are accepted when integral (``1.0``). A ``null`` label counts as missing.
    Paths are relative to the dataset root; ``\\`` is read as ``/``. With ``use_labels=True`` every
    image must have a label (otherwise :class:`DatasetError` lists the first few unlabelled files).
    Labels that name files not in the dataset are *not* an error (images are often removed after
    labelling): they give a :class:`DatasetWarning` with their count and the first few names.

``ImageDataset[i]`` returns ``(image, label)``: ``uint8 ndarray [C, H, W]`` and ``float32 ndarray
[label_dim]`` (shape ``[0]`` without labels). The object pickles cheaply and opens its zip lazily in
each process, so it works with DataLoader workers (fork or spawn).
"""

from __future__ import annotations

import io
import json
import math
import os
import posixpath
import struct
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import torch.utils.data
from PIL import Image

try:  # fast PNG decoding; Pillow is the fallback
    import pyspng
except ImportError:  # pragma: no cover - pyspng is a declared dependency
    pyspng = None

__all__ = [
    "DatasetError",
    "DatasetWarning",
    "DatasetLabels",
    "ImageHeader",
    "ImageSource",
    "ImageDataset",
    "open_image_dataset",
    "open_source",
    "read_image_header",
    "decode_image",
    "parse_dataset_json",
    "scale_16bit_to_8bit",
    "LABELS_FILE",
    "IMAGE_EXTENSIONS",
    "SUPPORTED_IMAGES",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
LABELS_FILE = "dataset.json"
SUPPORTED_IMAGES = "8- or 16-bit grayscale (L) or RGB PNG, or 8-bit grayscale (L) or RGB JPEG"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
MIN_RESOLUTION = 4
_LIST_MAX = 5  # how many file names an error message lists


class DatasetError(ValueError):
    """A dataset cannot be used; the message names the file (or path) and the problem."""


class DatasetWarning(UserWarning):
    """Something in a dataset looks wrong but training can proceed (e.g. labels for absent files)."""


def _first_few(names: Sequence[str], limit: int = _LIST_MAX) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _normalize_relpath(path: str) -> str:
    """``a\\b/./c.png`` -> ``a/b/c.png`` (the form the file listing uses)."""
    path = posixpath.normpath(path.replace("\\", "/"))
    return path[2:] if path.startswith("./") else path


def _is_hidden(relpath: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in relpath.split("/"))


# ----------------------------------------------------------------------------------------------------
# Where the files are: a folder or a zip.


class ImageSource:
    """Read-only access to the files of a folder or zip, by relative path with ``/`` separators."""

    path: str

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
        try:
            with self.open(rel) as fp:
                return fp.read()
        except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise DatasetError(f"{self.display(rel)}: cannot read file: {err}") from err

    def close(self) -> None:
        """Release open handles (they are reopened on demand)."""

    def _all_files(self) -> Iterator[str]:
        raise NotImplementedError


class _FolderSource(ImageSource):
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


# ----------------------------------------------------------------------------------------------------
# Headers and decoding.


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says. ``shape`` is ``(C, H, W)``."""

    format: str  # 'PNG' or 'JPEG'
    width: int
    height: int
    channels: int  # 1 or 3
    bit_depth: int  # 8 or 16

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


_PNG_COLOR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette (P)", 4: "grayscale+alpha (LA)", 6: "RGBA"}


def _unsupported(where: str, what: str) -> DatasetError:
    return DatasetError(
        f"{where}: unsupported image mode {what}; supported: {SUPPORTED_IMAGES}. "
        "Convert it first (e.g. Pillow's Image.convert('L') or convert('RGB'))"
    )


def _png_header(head: bytes, where: str) -> ImageHeader:
    if len(head) < 33 or head[12:16] != b"IHDR" or struct.unpack(">I", head[8:12])[0] != 13:
        raise DatasetError(f"{where}: corrupt or truncated PNG (no valid IHDR header)")
    width, height, depth, color_type = struct.unpack(">IIBB", head[16:26])
    if zlib.crc32(head[12:29]) != struct.unpack(">I", head[29:33])[0]:
        raise DatasetError(f"{where}: corrupt PNG (IHDR checksum mismatch)")
    if width == 0 or height == 0:
        raise DatasetError(f"{where}: corrupt PNG (size {width}x{height})")
    channels = {0: 1, 2: 3}.get(color_type)
    if channels is None or depth not in (8, 16):
        kind = _PNG_COLOR_TYPES.get(color_type, f"color type {color_type}")
        raise _unsupported(where, f"{depth}-bit {kind} PNG")
    return ImageHeader("PNG", width, height, channels, depth)


def _jpeg_header(fp: IO[bytes], where: str) -> ImageHeader:
    try:
        with Image.open(fp, formats=["JPEG"]) as im:  # lazy: reads markers up to the frame header
            mode, (width, height) = im.mode, im.size
    except Exception as err:  # Pillow raises many kinds (OSError, SyntaxError, struct.error, ...)
        raise DatasetError(f"{where}: corrupt or unreadable JPEG: {err}") from err
    channels = {"L": 1, "RGB": 3}.get(mode)
    if channels is None:
        raise _unsupported(where, f"{mode} JPEG")
    return ImageHeader("JPEG", width, height, channels, 8)


def read_image_header(fp: IO[bytes], where: str) -> ImageHeader:
    """Read the header of the PNG/JPEG in ``fp`` (seekable, at offset 0) without decoding pixels.

    Raises :class:`DatasetError` naming ``where`` for unreadable files and unsupported modes.
    """
    try:
        head = fp.read(33)
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise DatasetError(f"{where}: cannot read file: {err}") from err
    if head.startswith(PNG_SIGNATURE):
        return _png_header(head, where)
    if head.startswith(JPEG_SIGNATURE):
        fp.seek(0)
        return _jpeg_header(fp, where)
    if not head:
        raise DatasetError(f"{where}: empty file")
    raise DatasetError(f"{where}: not a PNG or JPEG file (starts with {head[:8]!r})")


def scale_16bit_to_8bit(arr: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 by the full 16-bit range: round(x / 257) == (x + 128) // 257 exactly."""
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _decode_pillow(data: bytes, header: ImageHeader, where: str) -> np.ndarray:
    if header.format == "PNG" and header.bit_depth == 16 and header.channels == 3:
        # Pillow has no 16-bit RGB mode: it would keep only the high byte (x >> 8), not round(x / 257).
        raise DatasetError(f"{where}: 16-bit RGB PNG needs pyspng to decode (pip install pyspng)")
    try:
        with Image.open(io.BytesIO(data), formats=[header.format]) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im)
    except Exception as err:
        raise DatasetError(f"{where}: corrupt image, cannot decode: {err}") from err
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    elif mode not in ("L", "RGB"):
        raise _unsupported(where, f"{mode} (as decoded by Pillow)")
    return arr


def _decode_pyspng(data: bytes, header: ImageHeader, where: str) -> np.ndarray:
    try:
        arr = pyspng.load(data)
    except Exception as err:
        raise DatasetError(f"{where}: corrupt PNG, cannot decode: {err}") from err
    # pyspng's automatic format may add an alpha channel (16-bit gray -> GA16, 16-bit RGB -> RGBA16).
    if arr.ndim == 3:
        arr = arr[:, :, 0] if header.channels == 1 else arr[:, :, :3]
    return arr


def decode_image(data: bytes, where: str, *, backend: str = "auto", keep_16bit: bool = False) -> np.ndarray:
    """Decode PNG/JPEG bytes to ``[H, W, C]`` (C = 1 or 3), ``uint8``.

    16-bit PNGs are scaled with ``round(x / 257)``, unless ``keep_16bit`` (then ``uint16`` is returned
    for them). ``backend``: ``'auto'`` (pyspng for PNG when installed, falling back to Pillow if it
    fails), ``'pyspng'`` or ``'pillow'``. JPEG always uses Pillow. Raises :class:`DatasetError` naming
    ``where`` for corrupt or unsupported images.
    """
    if backend not in ("auto", "pyspng", "pillow"):
        raise ValueError(f"backend must be 'auto', 'pyspng' or 'pillow', got {backend!r}")
    header = read_image_header(io.BytesIO(data), where)
    if header.format == "PNG" and backend != "pillow":
        if pyspng is None:
            if backend == "pyspng":
                raise DatasetError(f"{where}: backend 'pyspng' requested but pyspng is not installed")
            arr = _decode_pillow(data, header, where)
        elif backend == "pyspng":
            arr = _decode_pyspng(data, header, where)
        else:
            try:
                arr = _decode_pyspng(data, header, where)
            except DatasetError as spng_err:
                try:
                    arr = _decode_pillow(data, header, where)
                except DatasetError:
                    raise spng_err from None
    else:
        arr = _decode_pillow(data, header, where)
    if arr.ndim == 2:
        arr = arr[:, :, np.newaxis]
    if arr.shape != (header.height, header.width, header.channels):
        raise DatasetError(
            f"{where}: decoded shape {arr.shape} (H, W, C) does not match its header "
            f"{(header.height, header.width, header.channels)}"
        )
    if arr.dtype == np.uint16 and not keep_16bit:
        arr = scale_16bit_to_8bit(arr)
    return arr


# ----------------------------------------------------------------------------------------------------
# Labels.


@dataclass(frozen=True)
class DatasetLabels:
    """A parsed ``dataset.json``.

    ``labels`` maps normalized relative paths to an ``int`` class index or a ``tuple`` of floats; it
    is ``None`` for ``"labels": null``. Entries whose label is ``null`` are left out. ``kind`` is
    ``'int'``, ``'vector'`` or ``None`` (no labelled entries).
    """

    labels: dict[str, int | tuple[float, ...]] | None
    class_names: list[str] | None
    format: str  # 'upstream' or 'flat'
    kind: str | None
    where: str

    @property
    def vector_dim(self) -> int | None:
        if self.kind != "vector" or not self.labels:
            return None
        return len(next(iter(self.labels.values())))


def _check_label(value: Any, key: str, where: str) -> int | tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise DatasetError(f"{where}: label for {key!r} is a boolean ({value}); use 0/1 class indices")
    if isinstance(value, int):
        if value < 0:
            raise DatasetError(f"{where}: label for {key!r} is {value}; class indices must be >= 0")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value) or value < 0:
            raise DatasetError(
                f"{where}: label for {key!r} is {value}; a single label must be a non-negative integer "
                "class index (use a list of numbers for a float vector label)"
            )
        return int(value)
    if isinstance(value, list):
        if not value:
            raise DatasetError(f"{where}: label for {key!r} is an empty list")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise DatasetError(f"{where}: label for {key!r} must be a list of numbers, got {value!r}")
        if not all(math.isfinite(v) for v in value):
            raise DatasetError(f"{where}: label for {key!r} contains NaN or infinity: {value!r}")
        return tuple(float(v) for v in value)
    raise DatasetError(
        f"{where}: label for {key!r} must be an integer class index, a list of numbers or null, "
        f"got {type(value).__name__} {value!r}"
    )


def parse_dataset_json(data: bytes | str, where: str) -> DatasetLabels:
    """Parse and validate ``dataset.json`` text (either format, see the module docstring).

    Raises :class:`DatasetError` naming ``where`` for invalid JSON (with line and column) or a wrong
    structure.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise DatasetError(f"{where}: not UTF-8 text: {err}") from err
    try:
        obj = json.loads(data)
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{where}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from err
    if not isinstance(obj, dict):
        raise DatasetError(
            f'{where}: expected a JSON object ({{"labels": [[path, label], ...]}} or '
            f"{{path: label, ...}}), got {type(obj).__name__}"
        )

    class_names = obj.get("class_names")
    if class_names is not None:
        if not isinstance(class_names, list) or not all(isinstance(n, str) for n in class_names):
            raise DatasetError(f'{where}: "class_names" must be a list of strings, got {class_names!r}')
        if len(set(class_names)) != len(class_names):
            dup = [n for n, c in Counter(class_names).items() if c > 1]
            raise DatasetError(f'{where}: "class_names" has duplicates: {dup}')

    pairs: list[tuple[str, Any]] = []
    if "labels" in obj:
        fmt = "upstream"
        entries = obj["labels"]
        if entries is None:
            return DatasetLabels(None, class_names, fmt, None, where)
        if not isinstance(entries, list):
            raise DatasetError(
                f'{where}: "labels" must be a list of [path, label] pairs or null, got {type(entries).__name__}'
            )
        for i, entry in enumerate(entries):
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise DatasetError(f'{where}: "labels" entry {i} must be a [path, label] pair, got {entry!r}')
            pairs.append((entry[0], entry[1]))
    else:
        fmt = "flat"
        pairs = [(k, v) for k, v in obj.items() if k != "class_names"]

    labels: dict[str, int | tuple[float, ...]] = {}
    for key, value in pairs:
        label = _check_label(value, key, where)
        if label is None:
            continue
        rel = _normalize_relpath(key)
        if rel in labels and labels[rel] != label:
            raise DatasetError(
                f"{where}: {key!r} is listed twice with different labels ({labels[rel]} and {label})"
            )
        labels[rel] = label

    ints = [k for k, v in labels.items() if isinstance(v, int)]
    vecs = [k for k, v in labels.items() if not isinstance(v, int)]
    if ints and vecs:
        raise DatasetError(
            f"{where}: labels mix integer classes (e.g. {ints[0]!r}) and float vectors (e.g. {vecs[0]!r})"
        )
    kind = "int" if ints else "vector" if vecs else None
    if kind == "vector":
        dims = {k: len(labels[k]) for k in vecs}
        first = vecs[0]
        for k in vecs:
            if dims[k] != dims[first]:
                raise DatasetError(
                    f"{where}: vector labels differ in length: {first!r} has {dims[first]}, {k!r} has {dims[k]}"
                )
        if class_names is not None and len(class_names) != dims[first]:
            raise DatasetError(
                f'{where}: "class_names" has {len(class_names)} names but vector labels have {dims[first]} values'
            )
    if kind == "int" and class_names is not None:
        worst = max(ints, key=lambda k: labels[k])
        if labels[worst] >= len(class_names):
            raise DatasetError(
                f'{where}: label {labels[worst]} for {worst!r} has no name: "class_names" lists only '
                f"{len(class_names)} classes"
            )
    return DatasetLabels(labels, class_names, fmt, kind, where)


# ----------------------------------------------------------------------------------------------------
# The dataset.


class ImageDataset(torch.utils.data.Dataset):
    """Images (and labels) of a folder or zip; see the module docstring for formats and rules.

    ``self[i]`` -> ``(uint8 [C, H, W], float32 [label_dim])``. With ``xflip`` the length doubles and items
    ``n..2n-1`` are items ``0..n-1`` flipped horizontally. ``max_size`` keeps a random subset of that
    many images (before mirroring), chosen with ``random_seed`` the way upstream does
    (``RandomState(seed).shuffle`` of the indices, first ``max_size``, sorted).

    Attributes: ``name`` (folder name or zip stem), ``path``, ``resolution``, ``num_channels``,
    ``image_shape`` ``[C, H, W]``, ``label_dim``, ``label_shape`` ``[label_dim]``, ``has_labels``,
    ``class_names`` (``list[str] | None``), ``xflip``, ``use_labels``, ``max_size``, ``random_seed``,
    ``num_images`` (distinct images after the subset), ``init_kwargs`` (JSON-able, reopens the same
    dataset). ``raw_labels``: per item (aligned with ``self[i]``), ``int64 [len]`` class indices or
    ``float32 [len, label_dim]`` vectors, ``None`` without labels.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        use_labels: bool = False,
        xflip: bool = False,
        max_size: int | None = None,
        random_seed: int = 0,
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.use_labels = bool(use_labels)
        self.xflip = bool(xflip)
        self.max_size = max_size
        self.random_seed = int(random_seed)
        if max_size is not None and (not isinstance(max_size, (int, np.integer)) or max_size < 1):
            raise DatasetError(f"{self.path}: max_size must be a positive integer or None, got {max_size!r}")

        self._source = open_source(self.path)
        base = os.path.basename(self.path.rstrip(os.sep))
        self.name = os.path.splitext(base)[0] if isinstance(self._source, _ZipSource) else base

        files, self._ignored = self._source.list_files()
        if not files:
            raise DatasetError(self._empty_message())
        self._all_files = files
        shape = self._check_headers(files)
        self.image_shape = list(shape)  # [C, H, W]
        self.num_channels = shape[0]
        self.resolution = shape[1]

        self._labels_info: DatasetLabels | None = None
        self._label_matrix = np.zeros([len(files), 0], dtype=np.float32)  # [n_all, label_dim]
        self._raw_all: np.ndarray | None = None  # int64 [n_all] or float32 [n_all, D]
        self.class_names: list[str] | None = None
        if self.use_labels:
            self._load_labels(files)
        self.label_dim = int(self._label_matrix.shape[1])
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
            msg += f"; {len(self._ignored)} other files ignored, e.g. {_first_few(self._ignored, 3)}"
        return msg

    def _check_headers(self, files: list[str]) -> tuple[int, int, int]:
        headers: list[ImageHeader | None] = []
        problems: list[str] = []
        for rel in files:
            where = self._source.display(rel)
            try:
                try:
                    fp = self._source.open(rel)
                except (OSError, zipfile.BadZipFile, zlib.error) as err:
                    raise DatasetError(f"{where}: cannot open: {err}") from err
                with fp:
                    headers.append(read_image_header(fp, where))
            except DatasetError as err:
                headers.append(None)
                problems.append(str(err))
        if problems:
            listed = "\n  ".join(problems[:_LIST_MAX])
            more = f"\n  ... and {len(problems) - _LIST_MAX} more" if len(problems) > _LIST_MAX else ""
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
                f" (found {_first_few(nested, 3)} in a subfolder: labels must be at the root)"
                if nested
                else ""
            )
            raise DatasetError(f"use_labels=True but {where} does not exist{hint}")
        info = parse_dataset_json(self._source.read_bytes(LABELS_FILE), where)
        if info.labels is None:
            raise DatasetError(f'{where}: "labels" is null, so there are no labels to use (use_labels=True)')
        file_set = set(files)
        missing = [f for f in files if f not in info.labels]
        extra = sorted(k for k in info.labels if k not in file_set)
        extra_note = (
            f"{len(extra)} labels name files that are not in the dataset (e.g. {_first_few(extra, 3)})"
            if extra
            else ""
        )
        if missing:
            msg = f"{where}: {len(missing)} of {len(files)} images have no label: {_first_few(missing)}"
            if extra:
                msg += f"; {extra_note}: label paths must be relative to the dataset root with '/' separators"
            raise DatasetError(msg)
        if extra:
            warnings.warn(f"{where}: {extra_note}; they are ignored", DatasetWarning, stacklevel=3)
        self._labels_info = info
        self.class_names = list(info.class_names) if info.class_names is not None else None
        values = [info.labels[f] for f in files]
        if info.kind == "int":
            raw = np.asarray(values, dtype=np.int64)  # [n_all]
            dim = max(int(raw.max()) + 1, len(self.class_names or []))
            matrix = np.zeros([len(files), dim], dtype=np.float32)
            matrix[np.arange(len(files)), raw] = 1
        else:
            raw = np.asarray(values, dtype=np.float32)  # [n_all, D]
            matrix = raw
        self._raw_all = raw
        self._label_matrix = matrix

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
        arr = decode_image(self._source.read_bytes(rel), where)  # [H, W, C]
        if list(arr.shape) != [self.image_shape[1], self.image_shape[2], self.image_shape[0]]:
            raise DatasetError(f"{where}: shape changed since the dataset was opened")
        img = arr.transpose(2, 0, 1)  # [C, H, W]
        if self._flip[i]:
            img = img[:, :, ::-1]
        return np.ascontiguousarray(img)

    def get_label(self, idx: int) -> np.ndarray:
        """Item ``idx``'s label: ``float32 [label_dim]`` (one-hot for class labels, ``[0]`` without labels)."""
        return self._label_matrix[self._raw_idx[self._index(idx)]].copy()

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
            listed = "\n  ".join(problems[:_LIST_MAX])
            more = f"\n  ... and {len(problems) - _LIST_MAX} more" if len(problems) > _LIST_MAX else ""
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
        kind = "zip" if isinstance(self._source, _ZipSource) else "folder"
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
) -> ImageDataset:
    """Open a folder (recursive) or ``.zip`` of images as an :class:`ImageDataset` (see its docstring)."""
    return ImageDataset(path, use_labels=use_labels, xflip=xflip, max_size=max_size, random_seed=random_seed)
