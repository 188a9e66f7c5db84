"""DICOM -> display image: the one rendering function every tool in SpineGAN uses.

:func:`render_dicom` applies, in this order (DICOM PS3.3 C.11 / PS3.4 N.2):

1. decode the stored values (pydicom; compressed syntaxes through the pylibjpeg plugins);
2. padding mask: pixels whose *stored* value equals Pixel Padding Value (0028,0120), or lies between
   it and Pixel Padding Range Limit (0028,0121), are padding and end up black;
3. Modality LUT: Rescale Slope/Intercept, or a Modality LUT Sequence (pydicom ``apply_modality_lut``);
4. VOI: a VOI LUT Sequence if present (preferred over a window, like pydicom's
   ``apply_voi_lut(prefer_lut=True)``; applied by our own few lines because pydicom 3.0's ``apply_voi``
   wraps 8-bit LUTs), else the first Window Center/Width with its VOI LUT Function (LINEAR,
   LINEAR_EXACT, SIGMOID; pydicom ``apply_windowing`` or the equivalent fast path), else -- or when
   ``window="percentile"`` -- the percentile fallback: a LINEAR_EXACT window from the 0.5th to the
   99.5th percentile of the modality values of the non-padding pixels (percentile = the smallest value
   whose cumulative count reaches that fraction), recorded in the metadata;
5. normalisation by the VOI output range (the window maps to [0, 1]; never per-image min/max);
6. inversion, exactly once: if Presentation LUT Shape (2050,0020) is present, invert iff it is
   INVERSE; otherwise invert iff Photometric Interpretation is MONOCHROME1 (bone ends up white);
7. geometry (:mod:`data_processing.geometry`): aspect-preserving anti-aliased resize, then padding to
   a black square (or centre crop); values are clipped to [0, 1] after resampling (Lanczos ringing);
8. quantisation to 8 or 16 bits: ``round(y * (2**bits - 1))``.

Fast path. For the usual case (rescale + LINEAR/LINEAR_EXACT window, or the percentile window) the
whole grey-level chain is ``y = s * (clip(x, lo, hi) - black)`` on the stored value ``x``: only the
clip runs at full resolution, on the integers themselves where possible, and the affine map runs on
the small image (:mod:`data_processing.window_path`; identical results up to float32 rounding, a
fraction of the work). Every other case (LUT sequences, SIGMOID, 1-wide windows, header values beyond
float32's range) builds a lookup table over all stored values with pydicom's own functions and applies
it per strip.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from data_processing.errors import (
    ConstantImageError,
    InvalidModalityLUTError,
    InvalidTagValueError,
    InvalidWindowError,
    UnsupportedPresentationLUTError,
)
from data_processing.geometry import CropMode, fit_image, is_power_of_two
from data_processing.reader import (
    ImageInfo,
    StoredPixels,
    decode_stored,
    describe_source,
    inspect_image,
    read_dataset,
    tag_text,
)
from data_processing.window_path import LinearMap, WindowPath, linear_from_affine
from data_processing.window_path import integer_window as _integer_window  # module-level: tests spy on it
from stylegan2_ada.limits import MAX_RESOLUTION

__all__ = ["RenderOptions", "RenderResult", "render_dicom", "quantise", "RENDER_VERSION", "MAX_RESOLUTION"]

#: Bumped whenever rendering changes its output, so caches keyed on it are invalidated.
RENDER_VERSION = 3  # 2: integer box stage and banded float32 Lanczos (outputs within 6e-6 of version 1);
# 3: block sums of raw 8/16-bit stored values no longer wrap around (windows containing every value)
WindowMode = Literal["auto", "percentile"]


@dataclass(frozen=True)
class RenderOptions:
    """How to render. ``resolution=None`` keeps the native size (no resize, no padding)."""

    resolution: int | None = 256
    crop: CropMode = "pad"
    bits: int = 8
    window: WindowMode = "auto"
    percentiles: tuple[float, float] = (0.5, 99.5)
    allow_colour: bool = False
    allow_multiframe: bool = False
    allow_for_processing: bool = False

    def __post_init__(self) -> None:
        if self.resolution is not None and (
            not isinstance(self.resolution, int)
            or not is_power_of_two(self.resolution)
            or not 4 <= self.resolution <= MAX_RESOLUTION
        ):
            raise ValueError(
                f"resolution must be a power of two from 4 to {MAX_RESOLUTION} (e.g. 256), not {self.resolution!r}"
            )
        if self.crop not in ("pad", "center"):
            raise ValueError(f"crop must be 'pad' or 'center', not {self.crop!r}")
        if self.bits not in (8, 16):
            raise ValueError(f"bits must be 8 or 16, not {self.bits!r}")
        if self.window not in ("auto", "percentile"):
            raise ValueError(f"window must be 'auto' or 'percentile', not {self.window!r}")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, not {self.percentiles!r}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able settings (for reports and cache keys)."""
        d = asdict(self)
        d["percentiles"] = list(self.percentiles)
        return d


@dataclass
class RenderResult:
    """``image``: uint8/uint16 [R, R]; ``display``: float32 [R, R] in [0, 1]; ``metadata``: what was done."""

    image: np.ndarray
    display: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# Planning: which grey-level chain does the file ask for?


@dataclass(frozen=True)
class _Plan:
    slope: float
    intercept: float
    modality_lut: bool  # Modality LUT Sequence (applied with pydicom)
    voi: str  # "lut" | "window" | "percentile"
    center: float = 0.0
    width: float = 0.0
    function: str = "LINEAR"
    invert: bool = False
    padding: tuple[int, int] | None = None  # inclusive stored-value range
    meta: dict[str, Any] = field(default_factory=dict)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (MultiValue, list, tuple)) else value


def _float_tag(ds: Dataset, keyword: str, where: str, error: type, index: int = 0) -> float:
    try:
        value = ds[keyword].value
        if isinstance(value, (MultiValue, list, tuple)):
            value = value[index]
        number = float(value)
    except Exception:
        raw = ds.get_item(keyword)
        raw_value = getattr(raw, "value", raw)
        raise error(
            where, f"{tag_text(keyword)} has the invalid value {raw_value!r} (a number is required)"
        ) from None
    if not math.isfinite(number):
        raise error(where, f"{tag_text(keyword)} is {number}, not a finite number")
    return number


def _padding_range(ds: Dataset, info: ImageInfo, where: str) -> tuple[int, int] | None:
    if "PixelPaddingValue" not in ds or ds.PixelPaddingValue in (None, ""):
        return None
    try:
        value = int(_first(ds.PixelPaddingValue))
        limit = (
            int(_first(ds.PixelPaddingRangeLimit))
            if ds.get("PixelPaddingRangeLimit") not in (None, "")
            else value
        )
    except Exception:
        raise InvalidTagValueError(
            where, f"(0028,0120) Pixel Padding Value {ds.get('PixelPaddingValue')!r} is not an integer"
        ) from None
    bits = info.bits_allocated
    if info.signed:  # read as US although the pixels are signed: reinterpret the bits
        value = value - (1 << bits) if value >= 1 << (bits - 1) else value
        limit = limit - (1 << bits) if limit >= 1 << (bits - 1) else limit
    else:  # read as SS although the pixels are unsigned
        value = value + (1 << bits) if value < 0 else value
        limit = limit + (1 << bits) if limit < 0 else limit
    lo, hi = max(min(value, limit), info.stored_min), min(max(value, limit), info.stored_max)
    return (lo, hi) if lo <= hi else None  # a padding value no pixel can have masks nothing


def _inversion(ds: Dataset, info: ImageInfo, where: str, warnings_out: list[str]) -> tuple[bool, str]:
    if "PresentationLUTSequence" in ds:
        raise UnsupportedPresentationLUTError(
            where,
            "has a Presentation LUT Sequence (2050,0010); only Presentation LUT Shape IDENTITY/INVERSE is supported",
        )
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if shape:
        if shape not in ("IDENTITY", "INVERSE"):
            raise UnsupportedPresentationLUTError(
                where,
                f"has Presentation LUT Shape (2050,0020) {shape!r}; only IDENTITY and INVERSE are defined",
            )
        invert = shape == "INVERSE"
        if invert != (info.photometric == "MONOCHROME1"):
            warnings_out.append(
                f"Presentation LUT Shape {shape} disagrees with {info.photometric}; followed the Presentation LUT Shape"
            )
        return invert, f"Presentation LUT Shape {shape}"
    invert = info.photometric == "MONOCHROME1"
    return invert, info.photometric


def _plan(ds: Dataset, info: ImageInfo, where: str, options: RenderOptions) -> _Plan:
    notes: list[str] = []
    meta: dict[str, Any] = {}
    # Modality LUT
    modality_lut = bool(ds.get("ModalityLUTSequence"))
    slope, intercept = 1.0, 0.0
    if modality_lut:
        item = ds.ModalityLUTSequence[0]
        meta["modality_lut"] = f"Modality LUT Sequence ({item.get('ModalityLUTType', '') or 'no type'})"
    elif "RescaleSlope" in ds or "RescaleIntercept" in ds:
        slope = (
            _float_tag(ds, "RescaleSlope", where, InvalidModalityLUTError) if "RescaleSlope" in ds else 1.0
        )
        intercept = (
            _float_tag(ds, "RescaleIntercept", where, InvalidModalityLUTError)
            if "RescaleIntercept" in ds
            else 0.0
        )
        if slope == 0.0:
            raise InvalidModalityLUTError(
                where, "Rescale Slope (0028,1053) is 0: every pixel would map to one value"
            )
        ends = (info.stored_min * slope + intercept, info.stored_max * slope + intercept)
        if not all(math.isfinite(v) for v in ends):
            raise InvalidModalityLUTError(
                where,
                f"Rescale Slope (0028,1053) {slope:g} and Rescale Intercept (0028,1052) {intercept:g} map the "
                f"stored values {info.stored_min}..{info.stored_max} beyond the floating-point range",
            )
        meta["modality_lut"] = f"rescale slope={slope:g} intercept={intercept:g}"
    else:
        meta["modality_lut"] = "none"
    # VOI
    has_lut = bool(ds.get("VOILUTSequence"))
    has_center, has_width = (
        "WindowCenter" in ds and ds.WindowCenter not in (None, ""),
        "WindowWidth" in ds and ds.WindowWidth not in (None, ""),
    )
    voi, center, width, function = "percentile", 0.0, 0.0, "LINEAR_EXACT"
    if options.window == "auto" and has_lut:
        voi = "lut"
        item = ds.VOILUTSequence[0]
        try:
            descriptor = [int(v) for v in item.LUTDescriptor]
            if len(descriptor) != 3 or descriptor[2] not in range(8, 17) or "LUTData" not in item:
                raise ValueError
            _voi_lut_sequence(ds, info)  # LUT Data present and long enough
        except InvalidWindowError:
            raise
        except Exception:
            raise InvalidWindowError(
                where,
                f"VOI LUT Sequence has an invalid LUT Descriptor {item.get('LUTDescriptor')!r} or no LUT Data",
            ) from None
        explanation = str(item.get("LUTExplanation", "") or "").strip()
        meta["window_source"] = "voi-lut-sequence"
        meta["source_window"] = (
            f"VOI LUT {explanation + ' ' if explanation else ''}({descriptor[0] or 65536} entries, {descriptor[2]}-bit)"
        )
        meta["voi_function"] = "LUT"
    elif options.window == "auto" and (has_center or has_width):
        if not (has_center and has_width):
            raise InvalidWindowError(
                where, "has only one of Window Center (0028,1050) and Window Width (0028,1051)"
            )
        center = _float_tag(ds, "WindowCenter", where, InvalidWindowError)
        width = _float_tag(ds, "WindowWidth", where, InvalidWindowError)
        function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            raise InvalidWindowError(
                where, f"VOI LUT Function (0028,1056) {function!r} is not LINEAR, LINEAR_EXACT or SIGMOID"
            )
        if (function == "LINEAR" and width < 1) or width <= 0:
            need = ">= 1 for LINEAR" if function == "LINEAR" else "> 0"
            raise InvalidWindowError(where, f"Window Width (0028,1051) is {width:g}; it must be {need}")
        count = len(ds.WindowCenter) if isinstance(ds.WindowCenter, MultiValue) else 1
        if count > 1:
            notes.append(f"{count} windows in the file; used the first")
        voi = "window"
        meta["window_source"] = "window"
        meta["source_window"] = f"C={center:g} W={width:g}"
        meta["voi_function"] = function
    else:
        meta["window_source"] = "percentile"
        meta["voi_function"] = "LINEAR_EXACT"
        if options.window == "auto":
            meta["fallback"] = "percentile (no VOI LUT or window in the file)"
    invert, why = _inversion(ds, info, where, notes)
    meta["inverted"] = invert
    meta["inversion_reason"] = why if invert else ""
    meta["warnings"] = notes
    return _Plan(
        slope=slope,
        intercept=intercept,
        modality_lut=modality_lut,
        voi=voi,
        center=center,
        width=width,
        function=function,
        invert=invert,
        padding=_padding_range(ds, info, where),
        meta=meta,
    )


# ----------------------------------------------------------------------------------------------------
# Grey-level maps


def _modality_values(plan: _Plan, ds: Dataset, values: np.ndarray) -> np.ndarray:
    """Modality output (float64) for integer stored ``values``."""
    if plan.modality_lut:
        return np.asarray(apply_modality_lut(values, ds), dtype=np.float64)
    return values.astype(np.float64) * plan.slope + plan.intercept


def _window_output_range(ds: Dataset, info: ImageInfo, plan: _Plan) -> tuple[float, float]:
    """The (y_min, y_max) that pydicom's ``apply_windowing`` maps the window onto."""
    if plan.modality_lut:
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    y_min, y_max = float(info.stored_min), float(info.stored_max)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        y_min, y_max = y_min * plan.slope + plan.intercept, y_max * plan.slope + plan.intercept
    return y_min, y_max


def _voi_lut_sequence(ds: Dataset, info: ImageInfo) -> tuple[int, int, np.ndarray]:
    """(first mapped value, bits per entry, LUT data int64 [entries]) of the first VOI LUT Sequence item."""
    item = ds.VOILUTSequence[0]
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    if first > 32767 and (info.signed or ds.get("RescaleIntercept", 0) < 0):
        first -= 65536  # the descriptor's first value is SS for signed input, read here as US
    raw = item.LUTData
    if isinstance(raw, bytes):
        little = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) != "1.2.840.10008.1.2.2"
        data = np.frombuffer(raw, dtype="<u2" if little else ">u2").astype(np.int64)
    else:
        data = np.asarray(raw if isinstance(raw, (list, MultiValue)) else [raw], dtype=np.int64)
    if data.size < entries:
        raise InvalidWindowError(
            describe_source(getattr(ds, "filename", None)),
            f"VOI LUT Sequence: LUT Data has {data.size} entries but its LUT Descriptor says {entries}",
        )
    return first, bits, data[:entries]


def _apply_voi_lut_sequence(modality: np.ndarray, ds: Dataset, info: ImageInfo) -> np.ndarray:
    """VOI LUT Sequence (PS3.3 C.11.2.1.1), normalised by its output range 2**bits - 1.

    Inputs below the first mapped value take the first entry, above the last the last entry;
    fractional modality values are rounded to the nearest integer. (pydicom 3.0's ``apply_voi``
    indexes 8-bit LUTs with a uint8 array, which wraps for inputs beyond 255, hence our own.)
    """
    first, bits, data = _voi_lut_sequence(ds, info)
    index = np.clip(np.rint(modality).astype(np.int64) - first, 0, data.size - 1)
    return data[index] / float(2**bits - 1)


def _lut_map(
    plan: _Plan, ds: Dataset, info: ImageInfo, percentile_window: tuple[float, float] | None, where: str
) -> np.ndarray:
    """float32 LUT [stored_max - stored_min + 1] of display values (padding entries black)."""
    values = np.arange(info.stored_min, info.stored_max + 1, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # absurd headers: checked below
        if plan.modality_lut:
            modality = apply_modality_lut(values, ds)
        else:
            modality = values.astype(np.float64) * plan.slope + plan.intercept
        if plan.voi == "lut":
            y = _apply_voi_lut_sequence(np.asarray(modality, dtype=np.float64), ds, info)
        elif plan.voi == "window":
            out = np.asarray(
                apply_voi_lut(np.asarray(modality, dtype=np.float64), ds, prefer_lut=False), dtype=np.float64
            )
            y_min, y_max = _window_output_range(ds, info, plan)
            y = (out - y_min) / (y_max - y_min)
        else:
            assert percentile_window is not None
            lo, hi = percentile_window
            y = (np.asarray(modality, dtype=np.float64) - lo) / (hi - lo)
    if not np.all(np.isfinite(y)):
        raise InvalidWindowError(
            where,
            f"its {plan.meta.get('source_window', 'window')} gives no finite grey levels for some stored values "
            "(header values beyond the floating-point range)",
        )
    y = np.clip(y, 0.0, 1.0)
    if plan.invert:
        y = 1.0 - y
    lut = y.astype(np.float32)
    if plan.padding is not None:
        p0 = max(plan.padding[0], info.stored_min) - info.stored_min
        p1 = min(plan.padding[1], info.stored_max) - info.stored_min
        if p1 >= p0:
            lut[p0 : p1 + 1] = 0.0
    return lut


def _percentile_window(
    plan: _Plan,
    ds: Dataset,
    info: ImageInfo,
    stored: np.ndarray,
    percentiles: tuple[float, float],
    where: str,
) -> tuple[float, float]:
    """(low, high) modality values at the given percentiles of the non-padding pixels."""
    offset = info.stored_min
    size = info.stored_max - offset + 1
    counts = np.zeros(size, np.int64)  # histogram of the stored values, strip by strip (cache-sized casts)
    step = max(1, 65536 // max(1, stored.shape[1]))
    for r0 in range(0, stored.shape[0], step):
        strip = stored[r0 : r0 + step]
        idx = strip if offset == 0 and strip.dtype.kind == "u" else strip.astype(np.int64) - offset
        counts += np.bincount(idx.ravel(), minlength=size)
    if plan.padding is not None:
        p0 = max(plan.padding[0], info.stored_min) - offset
        p1 = min(plan.padding[1], info.stored_max) - offset
        if p1 >= p0:
            counts[p0 : p1 + 1] = 0
    present = np.nonzero(counts)[0]
    if present.size == 0:
        raise ConstantImageError(
            where, "every pixel is padding (Pixel Padding Value): there is no image content"
        )
    if present.size == 1:
        raise ConstantImageError(
            where, f"every (non-padding) pixel has the same stored value {int(present[0]) + offset}"
        )
    modality = _modality_values(plan, ds, present + offset)
    order = np.argsort(modality, kind="stable")
    values, cum = modality[order], np.cumsum(counts[present][order])
    total = int(cum[-1])

    def at(q: float) -> float:
        target = max(1, math.ceil(q / 100.0 * total))
        return float(values[min(int(np.searchsorted(cum, target, side="left")), values.size - 1)])

    lo, hi = at(percentiles[0]), at(percentiles[1])
    if hi <= lo:  # almost constant image: use the full range of values present
        lo, hi = float(values[0]), float(values[-1])
    if hi <= lo:
        raise ConstantImageError(where, f"every (non-padding) pixel has the same modality value {lo:g}")
    return lo, hi


# ----------------------------------------------------------------------------------------------------
# Rendering


def quantise(display: np.ndarray, bits: int) -> np.ndarray:
    """float [0, 1] -> uint8 (bits=8) or uint16 (bits=16): ``round(y * (2**bits - 1))``."""
    top = (1 << bits) - 1
    q = np.rint(np.clip(display, 0.0, 1.0) * np.float32(top))
    return q.astype(np.uint8 if bits == 8 else np.uint16)


def _linear_map(plan: _Plan, percentile_window: tuple[float, float] | None) -> LinearMap | None:
    """The grey-level chain as one clip + affine map on stored values, where it is one (else None: LUT path)."""
    if plan.modality_lut:
        return None
    if plan.voi == "window" and plan.function == "LINEAR" and plan.width > 1:
        w1 = plan.width - 1.0
        return linear_from_affine(
            plan.slope / w1, (plan.intercept - plan.center + 0.5) / w1 + 0.5, plan.invert
        )
    if plan.voi == "window" and plan.function == "LINEAR_EXACT":
        return linear_from_affine(
            plan.slope / plan.width, (plan.intercept - plan.center) / plan.width + 0.5, plan.invert
        )
    if plan.voi == "percentile":
        assert percentile_window is not None
        lo, hi = percentile_window
        return linear_from_affine(plan.slope / (hi - lo), (plan.intercept - lo) / (hi - lo), plan.invert)
    return None


class _LutPath:
    """``fit_image``'s stages for one image under any other grey-level chain: a lookup table per strip.

    ``lut``: float32 display values of the stored values ``first``, ``first + 1``, ... (padding entries
    black). After ``fit_image`` has run, ``padding_pixels`` and ``content_range`` are set as for
    :class:`~data_processing.window_path.WindowPath`.
    """

    reduce = None  # the box stage is reduce_box over to_float's strips

    def __init__(
        self, lut: np.ndarray, first: int, stored: StoredPixels, pad: tuple[int, int] | None
    ) -> None:
        self.lut, self.first, self.pad = lut, first, pad
        self._fix = stored.fix_strip
        self.padding_pixels = 0
        self.content_range: tuple[float, float] | None = None

    def to_float(self, strip: np.ndarray, out: np.ndarray) -> None:
        x = self._fix(strip)
        idx = x if self.first == 0 and x.dtype.kind == "u" else x.astype(np.int64) - self.first
        np.take(self.lut, idx, out=out, mode="clip")
        if self.pad is not None:
            self.padding_pixels += int(np.count_nonzero((x >= self.pad[0]) & (x <= self.pad[1])))

    def post(self, img: np.ndarray) -> np.ndarray:
        y = np.clip(img, 0.0, 1.0)
        self.content_range = (float(y.min()), float(y.max()))
        return y


def _render_grey(
    ds: Dataset, info: ImageInfo, stored: StoredPixels, options: RenderOptions, where: str
) -> tuple[np.ndarray, dict[str, Any]]:
    plan = _plan(ds, info, where, options)
    meta = dict(plan.meta)
    raw = stored.array  # [H, W] stored values (maybe uncorrected view)
    percentile_window = None
    if plan.voi == "percentile":
        percentile_window = _percentile_window(plan, ds, info, stored.corrected(), options.percentiles, where)
        lo_p, hi_p = options.percentiles
        meta["source_window"] = (
            f"percentile {lo_p:g}-{hi_p:g}: {percentile_window[0]:g}..{percentile_window[1]:g}"
        )
    linear = _linear_map(plan, percentile_window)
    path: WindowPath | _LutPath
    if linear is not None:
        path = WindowPath(linear, stored, plan.padding, _integer_window(linear, stored, plan.padding))
    else:
        path = _LutPath(
            _lut_map(plan, ds, info, percentile_window, where), info.stored_min, stored, plan.padding
        )
    display = fit_image(
        raw,
        options.resolution,
        options.crop,
        to_float=path.to_float,
        reduce=path.reduce,
        post=path.post,
        pad_value=0.0,
    )
    low, high = path.content_range or (0.0, 1.0)
    if high - low <= 1e-6:  # flat (up to float32 resampling noise)
        _explain_flat_output(plan, info, stored, where, meta)
    pad = plan.padding
    meta["padding"] = (
        "" if pad is None else (f"value {pad[0]}" if pad[0] == pad[1] else f"range {pad[0]}..{pad[1]}")
    )
    meta["padding_fraction"] = path.padding_pixels / float(raw.shape[0] * raw.shape[1])
    return display, meta


def _explain_flat_output(
    plan: _Plan, info: ImageInfo, stored: StoredPixels, where: str, meta: dict[str, Any]
) -> None:
    """The rendered image is one flat grey: say whether the data or the window is to blame."""
    values = stored.corrected()
    if plan.padding is not None:
        values = values[(values < plan.padding[0]) | (values > plan.padding[1])]
        if values.size == 0:
            raise ConstantImageError(
                where, "every pixel is padding (Pixel Padding Value): there is no image content"
            )
    vmin, vmax = int(values.min()), int(values.max())
    if vmin == vmax:
        raise ConstantImageError(where, f"every (non-padding) pixel has the same stored value {vmin}")
    raise InvalidWindowError(
        where,
        f"its {meta.get('source_window', 'window')} ({meta.get('voi_function', '')}) maps every pixel to one grey "
        f"level: stored values {vmin}..{vmax} lie entirely outside the window",
    )


def _render_colour(
    stored: StoredPixels, ds: Dataset, info: ImageInfo, options: RenderOptions
) -> tuple[np.ndarray, dict[str, Any]]:
    arr = stored.array
    if info.photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        top = 65535.0 if arr.dtype.itemsize > 1 else 255.0
    else:
        top = float((1 << info.bits_stored) - 1)
    if arr.ndim == 2:  # palette lookups of a 2-D index image give [H, W, 3]; guard anyway
        arr = arr[..., None].repeat(3, axis=2)
    grey = (
        arr[..., 0] * np.float32(0.299) + arr[..., 1] * np.float32(0.587) + arr[..., 2] * np.float32(0.114)
    ) / np.float32(top)
    display = fit_image(
        grey.astype(np.float32), options.resolution, options.crop, post=lambda y: np.clip(y, 0.0, 1.0)
    )
    meta = {
        "modality_lut": "none",
        "window_source": "colour",
        "source_window": f"luminance / {top:g}",
        "voi_function": "",
        "inverted": False,
        "inversion_reason": "",
        "warnings": [],
        "padding": "",
        "padding_fraction": 0.0,
    }
    return display, meta


def render_dicom(
    source: str | os.PathLike[str] | Dataset, options: RenderOptions | None = None
) -> RenderResult:
    """Render a DICOM file (or an already-read :class:`~pydicom.dataset.Dataset`) for training.

    Returns a :class:`RenderResult`: ``image`` uint8/uint16 [R, R] (R = ``options.resolution``; the
    native [H, W] when it is None), ``display`` float32 of the same shape in [0, 1] (0 = black), and
    ``metadata`` (see ``docs/dicom.md``: source window, inversion, fallback, padding, warnings, ...).
    Raises a :class:`~data_processing.errors.DicomInputError` subclass naming the file and the problem.
    The file is only read.
    """
    options = options or RenderOptions()
    with warnings.catch_warnings():  # pydicom's value-validation chatter: our errors say what matters
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
        return _render(source, options)


def _render(source: str | os.PathLike[str] | Dataset, options: RenderOptions) -> RenderResult:
    if isinstance(source, Dataset):
        ds = source
        path = getattr(source, "filename", None)
        path = path if isinstance(path, str) else None
    else:
        path = os.fspath(source)
        ds = read_dataset(path)
    where = describe_source(path)
    info = inspect_image(
        ds,
        where,
        allow_colour=options.allow_colour,
        allow_multiframe=options.allow_multiframe,
        allow_for_processing=options.allow_for_processing,
    )
    stored = decode_stored(ds, info, where)
    if info.is_grey:
        display, meta = _render_grey(ds, info, stored, options, where)
    else:
        display, meta = _render_colour(stored, ds, info, options)
    meta["warnings"] = list(info.warnings) + list(meta.get("warnings", []))
    meta.update(
        source=where,
        transfer_syntax=info.transfer_syntax,
        decoder=info.plugin,
        photometric=info.photometric,
        bits_stored=info.bits_stored,
        signed=info.signed,
        rows=info.rows,
        columns=info.columns,
        frames=info.frames,
        lossy=info.lossy,
        fallback=meta.get("fallback", ""),
        resolution=options.resolution,
        crop=options.crop,
        bits=options.bits,
    )
    return RenderResult(image=quantise(display, options.bits), display=display, metadata=meta)
