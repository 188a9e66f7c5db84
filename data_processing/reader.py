"""Read a DICOM file, check that it is an image we can render, and decode its stored pixel values.

Each step raises a specific :mod:`data_processing.errors` exception naming the file and the problem.
The input file is only ever opened for reading.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom import uid as _uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array as _pixel_array

from data_processing.decoders import LOSSY_TRANSFER_SYNTAXES, NATIVE, choose_decoding_plugin
from data_processing.errors import (
    ColourImageError,
    CorruptPixelDataError,
    DecodeError,
    DicomInputError,
    DicomStructureError,
    ForProcessingError,
    ImageTooLargeError,
    InvalidTagValueError,
    MissingPixelTagsError,
    MissingTransferSyntaxError,
    MultiFrameError,
    NoPixelDataError,
    NotDicomError,
    TruncatedPixelDataError,
    UnreadableFileError,
    UnsupportedBitDepthError,
)

__all__ = [
    "MAX_PIXELS",
    "ImageInfo",
    "StoredPixels",
    "read_dataset",
    "inspect_image",
    "decode_stored",
    "describe_source",
    "tag_text",
]

#: The most pixels per frame a file may claim: 16384 x 16384, ten times the largest radiographs (about
#: 4300 x 4300), so that a damaged or hostile header cannot make a decoder allocate gigabytes.
MAX_PIXELS = 2**28
_MAX_ROWS = 65535  # Rows and Columns are US (0028,0010/0011): 16 bits
_GREY = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "PALETTE COLOR")
_REQUIRED = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
)
_LITTLE_ENDIAN_NATIVE = (
    _uid.ImplicitVRLittleEndian,
    _uid.ExplicitVRLittleEndian,
    _uid.DeflatedExplicitVRLittleEndian,
)


@dataclass(frozen=True)
class ImageInfo:
    """The facts about a DICOM image that rendering needs (all validated)."""

    rows: int
    columns: int
    frames: int
    samples_per_pixel: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    signed: bool
    transfer_syntax: str
    plugin: str  # pydicom decoding plugin, or decoders.NATIVE
    lossy: bool
    for_processing: bool
    warnings: tuple[str, ...] = field(default=())

    @property
    def stored_min(self) -> int:
        return -(1 << (self.bits_stored - 1)) if self.signed else 0

    @property
    def stored_max(self) -> int:
        return (1 << (self.bits_stored - 1)) - 1 if self.signed else (1 << self.bits_stored) - 1

    @property
    def is_grey(self) -> bool:
        return self.samples_per_pixel == 1 and self.photometric in _GREY


@dataclass
class StoredPixels:
    """Stored pixel values [H, W] of one frame (or [H, W, 3] colour).

    ``array`` may be a read-only view of the file's bytes whose unused high bits (above Bits Stored)
    are not yet cleared. ``needs_bit_fix`` says what to do: False, nothing; True, mask / sign-extend every strip; None (unknown: not worth a pass over the whole image
    to find out), check each strip when it is used and correct only strips with a value outside the
    Bits Stored range. :meth:`fix_strip` (used by :meth:`corrected` and the renderer's strip kernels)
    does this; correcting a value inside the range changes nothing, so all three give the same values.
    """

    array: np.ndarray
    bits_stored: int
    signed: bool
    needs_bit_fix: bool | None
    _min: int | None = field(default=None, repr=False)  # cached value_min(), when already known
    _max: int | None = field(default=None, repr=False)  # cached value_max()

    @property
    def _stored_range(self) -> tuple[int, int]:
        if self.signed:
            return -(1 << (self.bits_stored - 1)), (1 << (self.bits_stored - 1)) - 1
        return 0, (1 << self.bits_stored) - 1

    def bounds(self) -> tuple[int, int]:
        """(low, high) containing every corrected stored value. Where the unused bits are corrected
        (``needs_bit_fix`` True or None) the values lie in the Bits Stored range, which is used without a
        pass over the pixels (unless min/max are known); otherwise (decoded arrays, full-width data)
        the actual min and max, computed once."""
        if self.needs_bit_fix is False:
            return self.value_min(), self.value_max()
        low, high = self._stored_range
        return (low if self._min is None else self._min), (high if self._max is None else self._max)

    def fix_strip(self, strip: np.ndarray) -> np.ndarray:
        """Stored values of ``strip`` (rows of :attr:`array`) with the unused high bits corrected."""
        if self.needs_bit_fix is False:
            return strip
        if self.needs_bit_fix is None:  # one read-only check of the (cache-hot) strip
            low, high = self._stored_range
            if int(strip.max()) <= high and (not self.signed or int(strip.min()) >= low):
                return strip
        shift = strip.dtype.itemsize * 8 - self.bits_stored
        if self.signed:  # sign-extend from bit (bits_stored - 1)
            out = np.left_shift(strip, shift)
            np.right_shift(out, shift, out=out)
            return out
        return np.bitwise_and(strip, np.array((1 << self.bits_stored) - 1, dtype=strip.dtype))

    def corrected(self) -> np.ndarray:
        """The whole array with the unused bits corrected (a new array when a fix was needed)."""
        return self.array if self.needs_bit_fix is False else self.fix_strip(self.array)

    def value_min(self) -> int:
        """The smallest (corrected) stored value; computed once (one pass over the pixels)."""
        if self._min is None:
            self._min = int(self.corrected().min())
        return self._min

    def value_max(self) -> int:
        """The largest (corrected) stored value; computed once."""
        if self._max is None:
            self._max = int(self.corrected().max())
        return self._max


def describe_source(path: str | os.PathLike[str] | None) -> str:
    return os.fspath(path) if path is not None else "<dataset>"


def read_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Read a DICOM file completely; raise :class:`NotDicomError` & co. with a clear message.

    Files without the 128-byte preamble and 'DICM' prefix are accepted when they still carry file
    meta information with a Transfer Syntax UID; a bare data set without one gets
    :class:`MissingTransferSyntaxError`, anything else :class:`NotDicomError`.
    """
    where = os.fspath(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ds = pydicom.dcmread(where)
            except InvalidDicomError:
                ds = _read_without_preamble(where)
    except DicomInputError:
        raise
    except PermissionError as exc:
        raise UnreadableFileError(where, f"cannot be read: permission denied ({exc.strerror})") from None
    except IsADirectoryError:
        raise UnreadableFileError(where, "is a directory, not a file") from None
    except OSError as exc:
        raise UnreadableFileError(where, f"cannot be read: {exc}") from None
    except Exception as exc:  # pydicom raises many kinds for damaged headers
        raise DicomStructureError(
            where, f"is damaged: its DICOM data set could not be parsed ({type(exc).__name__}: {exc})"
        ) from None
    texts = [str(w.message) for w in caught]
    if any("End of file reached" in t for t in texts) and "PixelData" not in ds:
        raise TruncatedPixelDataError(
            where,
            "is truncated: the file ends inside its Pixel Data (7FE0,0010) (an incomplete copy or transfer?)",
        )
    return ds


def _read_without_preamble(where: str) -> Dataset:
    """A file without the 'DICM' prefix: usable if it has file meta; else classify it as an error."""
    try:
        ds = pydicom.dcmread(where, force=True)
        looks_dicom = any(
            k in ds for k in ("SOPClassUID", "Rows", "PixelData", "Modality", "StudyInstanceUID")
        )
    except Exception:
        ds, looks_dicom = None, False
    if ds is not None and looks_dicom:
        if getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None):
            return ds
        raise MissingTransferSyntaxError(
            where,
            "is a DICOM data set without the Part 10 header (no 128-byte preamble, 'DICM' prefix or file meta "
            "information), so its Transfer Syntax UID (0002,0010) and hence the pixel encoding are unknown; "
            "re-export it as a DICOM Part 10 file (e.g. dcmtk: dcmconv +F in.dcm out.dcm)",
        )
    size = os.path.getsize(where) if os.path.exists(where) else 0
    raise NotDicomError(
        where, f"is not a DICOM file (no 'DICM' prefix at byte 128; {size} bytes, starting {_head(where)!r})"
    )


def _head(where: str, n: int = 8) -> bytes:
    try:
        with open(where, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def tag_text(keyword: str) -> str:
    tag = pydicom.datadict.tag_for_keyword(keyword)
    return (
        f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {pydicom.datadict.dictionary_description(tag)}"
        if tag
        else keyword
    )


def _raw_value(ds: Dataset, keyword: str) -> Any:
    try:
        elem = ds.get_item(keyword)
        value = getattr(elem, "value", elem)
        if isinstance(value, bytes):
            return value.decode("latin-1", "replace").strip("\x00 ")
        return value
    except Exception:
        return "?"


def _int_tag(
    ds: Dataset,
    keyword: str,
    where: str,
    *,
    allowed: tuple[int, ...] | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    try:
        value = ds[keyword].value
        if isinstance(value, (list, tuple)) or value is None or value == "":
            raise ValueError
        number = int(value)
        if number != float(value):
            raise ValueError
    except Exception:
        raise InvalidTagValueError(
            where,
            f"{tag_text(keyword)} has the invalid value {_raw_value(ds, keyword)!r} (an integer is required)",
        ) from None
    if (
        (allowed is not None and number not in allowed)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        if allowed is not None:
            expect = f"one of {allowed}"
        elif maximum is not None:
            expect = f"{minimum} to {maximum}" if minimum is not None else f"<= {maximum}"
        else:
            expect = f">= {minimum}"
        raise InvalidTagValueError(where, f"{tag_text(keyword)} is {number}, expected {expect}")
    return number


def _sop_class_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    if not uid:
        return "object of unknown SOP class"
    name = _uid.UID(str(uid)).name
    return f"'{name}' object" if name != str(uid) else f"object of SOP class {uid}"


def inspect_image(
    ds: Dataset,
    path: str | os.PathLike[str] | None = None,
    *,
    allow_colour: bool = False,
    allow_multiframe: bool = False,
    allow_for_processing: bool = False,
) -> ImageInfo:
    """Validate the Image Pixel module and the encoding of ``ds``; return the facts rendering needs."""
    where = describe_source(path)
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise UnsupportedBitDepthError(
            where,
            "holds floating-point pixel data (Float/Double Float Pixel Data), not integer radiograph pixels",
        )
    if "PixelData" not in ds:
        if "Rows" in ds and "Columns" in ds:
            raise NoPixelDataError(
                where,
                f"has image attributes (Rows, Columns) but no Pixel Data (7FE0,0010): the {_sop_class_name(ds)} "
                "is probably truncated, or was exported without its pixels",
            )
        raise NoPixelDataError(
            where, f"contains no pixel data (7FE0,0010): it is a {_sop_class_name(ds)}, not an image"
        )
    file_meta = getattr(ds, "file_meta", None)
    ts = getattr(file_meta, "TransferSyntaxUID", None) if file_meta is not None else None
    if not ts:
        raise MissingTransferSyntaxError(
            where,
            "has no Transfer Syntax UID (0002,0010) in its file meta information, so the pixel data encoding is "
            "unknown; re-export it as a complete DICOM Part 10 file",
        )
    missing = [k for k in _REQUIRED if k not in ds or ds[k].value in (None, "")]
    if missing:
        raise MissingPixelTagsError(
            where, "lacks required Image Pixel tags: " + ", ".join(tag_text(k) for k in missing)
        )
    rows = _int_tag(ds, "Rows", where, minimum=1, maximum=_MAX_ROWS)
    columns = _int_tag(ds, "Columns", where, minimum=1, maximum=_MAX_ROWS)
    spp = _int_tag(ds, "SamplesPerPixel", where, allowed=(1, 3))
    bits_allocated = _int_tag(ds, "BitsAllocated", where, minimum=1)
    bits_stored = _int_tag(ds, "BitsStored", where, minimum=1)
    pixel_rep = _int_tag(ds, "PixelRepresentation", where, allowed=(0, 1))
    frames = (
        _int_tag(ds, "NumberOfFrames", where, minimum=1)
        if "NumberOfFrames" in ds and ds.NumberOfFrames not in (None, "")
        else 1
    )
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    notes: list[str] = []

    if bits_allocated not in (8, 16):
        raise UnsupportedBitDepthError(
            where,
            f"has {bits_allocated}-bit pixels (Bits Allocated); only 8- and 16-bit integer images are supported"
            + (" (1-bit data is a bitmap/segmentation, not a radiograph)" if bits_allocated == 1 else ""),
        )
    if rows * columns > MAX_PIXELS:
        decoded = rows * columns * spp * bits_allocated / 8 / 2**30
        raise ImageTooLargeError(
            where,
            f"claims {columns} x {rows} pixels per frame ({rows * columns / 1e6:.0f} megapixels, {decoded:.1f} GiB "
            f"decoded); images above {MAX_PIXELS / 1e6:.0f} megapixels are refused (a radiograph has about 10-20): "
            "a damaged header?",
        )
    if bits_stored > bits_allocated:
        raise InvalidTagValueError(
            where,
            f"(0028,0101) Bits Stored ({bits_stored}) exceeds (0028,0100) Bits Allocated ({bits_allocated})",
        )
    if spp != 1 or photometric not in _GREY:
        if photometric not in _GREY + _COLOUR:
            raise InvalidTagValueError(
                where, f"(0028,0004) Photometric Interpretation {photometric!r} is not a known value"
            )
        if not allow_colour:
            raise ColourImageError(
                where,
                f"is a colour image ({photometric}, {spp} samples per pixel); radiographs are greyscale "
                "(MONOCHROME1/2). Opt in with allow_colour / --allow-colour to convert it to grey",
            )
        notes.append(f"colour image ({photometric}) converted to grey (luminance)")
    if frames > 1:
        if not allow_multiframe:
            raise MultiFrameError(
                where,
                f"has {frames} frames; a radiograph has one. Opt in with allow_multiframe / --allow-multiframe "
                "to use the first frame",
            )
        notes.append(f"multi-frame image: used frame 1 of {frames}")
    intent = str(ds.get("PresentationIntentType", "") or "").strip().upper()
    for_processing = intent == "FOR PROCESSING"
    if for_processing:
        if not allow_for_processing:
            raise ForProcessingError(
                where,
                "is a 'FOR PROCESSING' image (raw detector data, Presentation Intent Type (0008,0068)) that is "
                "not meant for display; use the 'FOR PRESENTATION' version, or opt in with --allow-for-processing",
            )
        notes.append("FOR PROCESSING image rendered as if for presentation")

    plugin = choose_decoding_plugin(str(ts), where)
    lossy_ts = str(ts) in LOSSY_TRANSFER_SYNTAXES
    lossy = lossy_ts or str(ds.get("LossyImageCompression", "") or "").strip() == "01"
    if lossy:
        why = _uid.UID(str(ts)).name if lossy_ts else "Lossy Image Compression (0028,2110) is 01"
        notes.append(f"lossy-compressed source ({why}); compression artefacts may be learnt")
    return ImageInfo(
        rows=rows,
        columns=columns,
        frames=frames,
        samples_per_pixel=spp,
        photometric=photometric,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=pixel_rep == 1,
        transfer_syntax=str(ts),
        plugin=plugin,
        lossy=lossy,
        for_processing=for_processing,
        warnings=tuple(notes),
    )


def decode_stored(ds: Dataset, info: ImageInfo, path: str | os.PathLike[str] | None = None) -> StoredPixels:
    """Decode the (first) frame's stored values: [H, W] for greyscale, [H, W, 3] (RGB) for colour.

    Little-endian uncompressed greyscale data is returned as a zero-copy read-only view of the file's
    bytes with ``needs_bit_fix`` None when Bits Stored < Bits Allocated (the caller checks and corrects
    the unused bits strip by strip, see :class:`StoredPixels`); everything else goes through the chosen
    pydicom plugin.
    """
    where = describe_source(path)
    index = 0 if info.frames > 1 else None
    fix: bool | None = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if info.plugin == NATIVE and info.transfer_syntax in _LITTLE_ENDIAN_NATIVE and info.is_grey:
                arr = _native_view(ds, info, where)
                # unused high bits only need clearing where some value lies outside the Bits Stored
                # range: checked strip by strip when the pixels are used (no pass over the image here)
                fix = None if info.bits_stored < info.bits_allocated else False
            else:
                plugin = "" if info.plugin == NATIVE else info.plugin
                arr = _pixel_array(ds, index=index, decoding_plugin=plugin)
                # the same strip check as uncompressed data, so that both give bit-identical renderings
                fix = None if info.is_grey and arr.dtype.itemsize * 8 > info.bits_stored else False
    except DicomInputError:
        raise
    except MemoryError:
        raise DecodeError(where, "is too large to decode in memory") from None
    except Exception as exc:
        raise _classify_decode_error(where, info, exc) from None
    expected = (info.rows, info.columns) if info.samples_per_pixel == 1 else (info.rows, info.columns, 3)
    if arr.shape != expected:
        raise CorruptPixelDataError(
            where, f"decoded pixel data has shape {arr.shape}, but Rows/Columns/Samples say {expected}"
        )
    return StoredPixels(array=arr, bits_stored=info.bits_stored, signed=info.signed, needs_bit_fix=fix)


def _native_view(ds: Dataset, info: ImageInfo, where: str) -> np.ndarray:
    """Read-only view [H, W] of the first frame of little-endian uncompressed greyscale Pixel Data.

    What pydicom's ``pixel_array(view_only=True)`` returns for these files, without its per-call
    decoder set-up: the Image Pixel attributes were validated by :func:`inspect_image`; here the
    length is checked (too short: :class:`TruncatedPixelDataError`, as pydicom words it; longer, e.g.
    a trailing padding byte: ignored).
    """
    data = ds.PixelData
    size = len(data)
    itemsize = info.bits_allocated // 8
    expected = info.rows * info.columns * itemsize * info.frames
    if size < expected:
        raise TruncatedPixelDataError(
            where,
            f"has truncated pixel data: The number of bytes of pixel data is less than expected ({size} vs "
            f"{expected} bytes) - the dataset may be corrupted, have an invalid group 0028 element value, or the "
            "transfer syntax may be incorrect (an incomplete copy or transfer?)",
        )
    dtype = np.dtype(f"<{'i' if info.signed else 'u'}{itemsize}")
    return np.frombuffer(data, dtype=dtype, count=info.rows * info.columns).reshape(info.rows, info.columns)


def _classify_decode_error(where: str, info: ImageInfo, exc: Exception) -> DicomInputError:
    text = " ".join(str(exc).split())
    ts_name = _uid.UID(info.transfer_syntax).name
    if "less than expected" in text or "is less than the expected" in text or "truncated" in text.lower():
        return TruncatedPixelDataError(
            where, f"has truncated pixel data: {text} (an incomplete copy or transfer?)"
        )
    if "raised by all available plugins" in text or "Unable to decode" in text:
        return CorruptPixelDataError(
            where, f"has corrupt {ts_name} pixel data that no decoder could read: {text}"
        )
    if isinstance(exc, (AttributeError, KeyError)):
        return DicomStructureError(where, f"cannot be decoded: {text}")
    return CorruptPixelDataError(
        where, f"has {ts_name} pixel data that could not be decoded: {type(exc).__name__}: {text}"
    )
