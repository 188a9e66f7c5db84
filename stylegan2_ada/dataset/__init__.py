"""Training images from a folder (searched recursively) or a zip archive, with optional labels.

Images
    PNG or JPEG files (``.png``, ``.jpg``, ``.jpeg``, any case), recognised by their content.
    Supported: 8- or 16-bit grayscale (1 channel) or RGB (3 channels) PNG, and 8-bit grayscale or RGB
    JPEG. All images must have the same shape, square and a power of two (at least 4). Palette,
    alpha (LA/RGBA), CMYK and 1/2/4-bit images are rejected with a message saying what is supported,
    as is a header claiming more than ``MAX_IMAGE_PIXELS`` (2**28) pixels.
    16-bit values are scaled to 8 bits by the full 16-bit range: ``y = round(x / 257)``, computed
    exactly as ``(x + 128) // 257`` (0 -> 0, 65535 -> 255; there are no ties). JPEG pixels are used
    as stored (an EXIF orientation tag is not applied).
    Files are sorted by their relative path with ``/`` separators, so the order is the same on every
    machine and for a folder and its zip. Hidden files and folders (name starting with ``.``) and
    ``__MACOSX`` are ignored, as is every file that is not a PNG/JPEG (counted in ``describe()``).

Opening a dataset reads only each file's header (PNG IHDR, or Pillow's lazy JPEG open) to check
modes and shapes; pixels are decoded in ``__getitem__`` (pyspng for PNG when installed, else Pillow;
Pillow for JPEG). A corrupt or truncated image body is therefore reported when it is read, as an
:class:`ImageDecodeError` naming the file (or by ``verify()``, for all of them at once).

Labels (``dataset.json`` at the root of the folder or zip; read only when ``use_labels=True``)
    * upstream format: ``{"labels": [["sub/a.png", 1], ...]}``; ``"labels": null`` means no labels;
    * flat format (the original SpineGAN fork's): ``{"sub/a.png": 1, ...}``;
    * optional ``"class_names": ["normal", "abnormal"]`` in either format;
    * a label is an integer class index (one-hot encoded; ``label_dim = max + 1``, or
      ``len(class_names)`` if that is larger) or a list of numbers (kept as a float vector; all of the
      same length). Scalar floats are accepted when integral (``1.0``). A ``null`` label counts as missing.
    Paths are relative to the dataset root; ``\\`` is read as ``/``. With ``use_labels=True`` every
    image must have a label and every label must name an image of the dataset (otherwise
    :class:`DatasetError` lists the first few of each and their count), and ``label_dim`` must not
    exceed ``max_classes`` (default :data:`DEFAULT_MAX_CLASSES`; a label of 1000000 is a typo far more
    often than a class count).

``ImageDataset[i]`` returns ``(image, label)``: ``uint8 ndarray [C, H, W]`` and ``float32 ndarray
[label_dim]`` (shape ``[0]`` without labels). The object pickles cheaply and opens its zip lazily in
each process, so it works with DataLoader workers (fork or spawn).

The modules, by concern: :mod:`.sources` (folder and zip listing and reading), :mod:`.decode` (PNG/JPEG
headers and pixels, 16 -> 8 bits), :mod:`.labels` (``dataset.json``), :mod:`.core` (the dataset),
:mod:`.errors`. Everything public is importable from ``stylegan2_ada.dataset``.
"""

from __future__ import annotations

from .core import MIN_RESOLUTION, ImageDataset, open_image_dataset
from .decode import (
    MAX_IMAGE_PIXELS,
    SUPPORTED_IMAGES,
    ImageHeader,
    decode_image,
    read_image_header,
    scale_16bit_to_8bit,
)
from .errors import DatasetError, ImageDecodeError
from .labels import DEFAULT_MAX_CLASSES, DatasetLabels, parse_dataset_json
from .sources import IMAGE_EXTENSIONS, LABELS_FILE, ImageSource, open_source

__all__ = [
    "DatasetError",
    "ImageDecodeError",
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
    "MIN_RESOLUTION",
    "MAX_IMAGE_PIXELS",
    "DEFAULT_MAX_CLASSES",
]
