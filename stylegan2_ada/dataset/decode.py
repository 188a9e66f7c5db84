"""PNG/JPEG headers and pixels, and the one 16-to-8-bit rule.

Supported: 8- or 16-bit grayscale (1 channel) or RGB (3 channels) PNG, and 8-bit grayscale or RGB
JPEG, recognised by their content (not their name). Palette, alpha (LA/RGBA), CMYK and 1/2/4-bit
images are rejected with a message saying what is supported. A header claiming more than
:data:`MAX_IMAGE_PIXELS` pixels is rejected before anything is decoded (a corrupt or hostile header
would otherwise ask for terabytes).

16-bit values are scaled to 8 bits by the full 16-bit range, ``y = round(x / 257)``, computed exactly as
``(x + 128) // 257`` (0 -> 0, 65535 -> 255; there are no ties): :func:`scale_16bit_to_8bit`. JPEG
pixels are used as stored (an EXIF orientation tag is not applied).

Every problem with one file raises :class:`~stylegan2_ada.dataset.errors.ImageDecodeError` naming it;
a truncated or corrupt file never escapes as a Pillow or pyspng exception.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import IO

import numpy as np
from PIL import Image

from .errors import ImageDecodeError
from .sources import READ_ERRORS

try:  # fast PNG decoding; Pillow is the fallback
    import pyspng
except ImportError:  # pragma: no cover - pyspng is a declared dependency
    pyspng = None

__all__ = [
    "SUPPORTED_IMAGES",
    "MAX_IMAGE_PIXELS",
    "ImageHeader",
    "read_image_header",
    "decode_image",
    "scale_16bit_to_8bit",
]

SUPPORTED_IMAGES = "8- or 16-bit grayscale (L) or RGB PNG, or 8-bit grayscale (L) or RGB JPEG"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
# 16384 x 16384: a 16-bit RGB image of this size decodes to 1.5 GiB. Pillow refuses JPEGs above
# 2 * Image.MAX_IMAGE_PIXELS (179M pixels by default) on its own; the same check covers PNG here.
MAX_IMAGE_PIXELS = 2**28


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


def _unsupported(where: str, what: str) -> ImageDecodeError:
    return ImageDecodeError(
        where,
        f"unsupported image mode {what}; supported: {SUPPORTED_IMAGES}. "
        "Convert it first (e.g. Pillow's Image.convert('L') or convert('RGB'))",
    )


def _check_size(width: int, height: int, kind: str, where: str) -> None:
    if width == 0 or height == 0:
        raise ImageDecodeError(where, f"corrupt {kind} (size {width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(
            where,
            f"{kind} header says {width}x{height} (W x H) = {width * height} pixels, more than the "
            f"{MAX_IMAGE_PIXELS} this reader decodes: a corrupt header, or an image to downscale first",
        )


def _png_header(head: bytes, where: str) -> ImageHeader:
    if len(head) < 33 or head[12:16] != b"IHDR" or struct.unpack(">I", head[8:12])[0] != 13:
        raise ImageDecodeError(where, "corrupt or truncated PNG (no valid IHDR header)")
    width, height, depth, color_type = struct.unpack(">IIBB", head[16:26])
    if zlib.crc32(head[12:29]) != struct.unpack(">I", head[29:33])[0]:
        raise ImageDecodeError(where, "corrupt PNG (IHDR checksum mismatch)")
    _check_size(width, height, "PNG", where)
    channels = {0: 1, 2: 3}.get(color_type)
    if channels is None or depth not in (8, 16):
        kind = _PNG_COLOR_TYPES.get(color_type, f"color type {color_type}")
        raise _unsupported(where, f"{depth}-bit {kind} PNG")
    return ImageHeader("PNG", width, height, channels, depth)


def _jpeg_header(fp: IO[bytes], where: str) -> ImageHeader:
    try:
        with Image.open(fp, formats=["JPEG"]) as im:  # lazy: reads markers up to the frame header
            mode, (width, height) = im.mode, im.size
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(where, f"JPEG too large to decode (a corrupt header?): {err}") from err
    except Exception as err:  # Pillow raises many kinds (OSError, SyntaxError, struct.error, ...)
        raise ImageDecodeError(where, f"corrupt or unreadable JPEG: {err}") from err
    _check_size(width, height, "JPEG", where)
    channels = {"L": 1, "RGB": 3}.get(mode)
    if channels is None:
        raise _unsupported(where, f"{mode} JPEG")
    return ImageHeader("JPEG", width, height, channels, 8)


def read_image_header(fp: IO[bytes], where: str) -> ImageHeader:
    """Read the header of the PNG/JPEG in ``fp`` (seekable, at offset 0) without decoding pixels.

    Raises :class:`ImageDecodeError` naming ``where`` for unreadable files, unsupported modes and
    sizes over :data:`MAX_IMAGE_PIXELS`.
    """
    try:
        head = fp.read(33)
    except READ_ERRORS as err:
        raise ImageDecodeError(where, f"cannot read file: {err}") from err
    if head.startswith(PNG_SIGNATURE):
        return _png_header(head, where)
    if head.startswith(JPEG_SIGNATURE):
        fp.seek(0)
        return _jpeg_header(fp, where)
    if not head:
        raise ImageDecodeError(where, "empty file")
    raise ImageDecodeError(where, f"not a PNG or JPEG file (starts with {head[:8]!r})")


def scale_16bit_to_8bit(arr: np.ndarray) -> np.ndarray:
    """uint16 (any shape) -> uint8 (same shape) by the full 16-bit range: ``round(x / 257)``.

    Computed exactly as ``(x + 128) // 257`` (0 -> 0, 65535 -> 255; x / 257 is never halfway between
    two integers, so there are no ties to break). The one rule for 16-bit data in this project.
    """
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _decode_pillow(data: bytes, header: ImageHeader, where: str) -> np.ndarray:
    if header.format == "PNG" and header.bit_depth == 16 and header.channels == 3:
        # Pillow has no 16-bit RGB mode: it would keep only the high byte (x >> 8), not round(x / 257).
        raise ImageDecodeError(where, "16-bit RGB PNG needs pyspng to decode (pip install pyspng)")
    try:
        with Image.open(io.BytesIO(data), formats=[header.format]) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im)
    except Exception as err:
        raise ImageDecodeError(where, f"corrupt image, cannot decode: {err}") from err
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    elif mode not in ("L", "RGB"):
        raise _unsupported(where, f"{mode} (as decoded by Pillow)")
    return arr


def _decode_pyspng(data: bytes, header: ImageHeader, where: str) -> np.ndarray:
    try:
        arr = pyspng.load(data)
    except Exception as err:
        raise ImageDecodeError(where, f"corrupt PNG, cannot decode: {err}") from err
    # pyspng's automatic format may add an alpha channel (16-bit gray -> GA16, 16-bit RGB -> RGBA16).
    if arr.ndim == 3:
        arr = arr[:, :, 0] if header.channels == 1 else arr[:, :, :3]
    return arr


def decode_image(data: bytes, where: str, *, backend: str = "auto", keep_16bit: bool = False) -> np.ndarray:
    """Decode PNG/JPEG bytes to ``[H, W, C]`` (C = 1 or 3), ``uint8``.

    16-bit PNGs are scaled with ``round(x / 257)``, unless ``keep_16bit`` (then ``uint16`` is returned
    for them). ``backend``: ``'auto'`` (pyspng for PNG when installed, falling back to Pillow if it
    fails), ``'pyspng'`` or ``'pillow'``. JPEG always uses Pillow. Raises :class:`ImageDecodeError`
    naming ``where`` for truncated, corrupt or unsupported images.
    """
    if backend not in ("auto", "pyspng", "pillow"):
        raise ValueError(f"backend must be 'auto', 'pyspng' or 'pillow', got {backend!r}")
    header = read_image_header(io.BytesIO(data), where)
    if header.format == "PNG" and backend != "pillow":
        if pyspng is None:
            if backend == "pyspng":
                raise ImageDecodeError(where, "backend 'pyspng' requested but pyspng is not installed")
            arr = _decode_pillow(data, header, where)
        elif backend == "pyspng":
            arr = _decode_pyspng(data, header, where)
        else:
            try:
                arr = _decode_pyspng(data, header, where)
            except ImageDecodeError as spng_err:
                try:
                    arr = _decode_pillow(data, header, where)
                except ImageDecodeError:
                    raise spng_err from None
    else:
        arr = _decode_pillow(data, header, where)
    if arr.ndim == 2:
        arr = arr[:, :, np.newaxis]
    if arr.shape != (header.height, header.width, header.channels):
        raise ImageDecodeError(
            where,
            f"decoded shape {arr.shape} (H, W, C) does not match its header "
            f"{(header.height, header.width, header.channels)}",
        )
    if arr.dtype == np.uint16 and not keep_16bit:
        arr = scale_16bit_to_8bit(arr)
    return arr
