"""The rendering fast path for linear windows: ``y = scale * (clip(x, lo, hi) - black)`` on stored values.

For the usual case (rescale + LINEAR/LINEAR_EXACT window, or the percentile window) the whole
grey-level chain of :mod:`data_processing.render` is one clip and one affine map on the stored value
``x`` (:class:`LinearMap`). The resize (:func:`~data_processing.geometry.fit_image`) is linear with
weights summing to one, so only the clip has to run at full resolution; the affine map runs on the
small image. :class:`WindowPath` is that pipeline for one image, in the form ``fit_image`` takes:

* box stage, exact on integers where possible: :func:`integer_window` plans it
  (:class:`IntegerWindow`, or None when it does not apply) and :meth:`IntegerWindow.block_means` runs
  it: clip and block sums on the stored integers themselves
  (:func:`~data_processing.geometry.box_sums`, uint16/uint32 accumulators, no float conversion of the
  full image); half-integer window edges are handled by doubling ``x``, other fractional edges by an
  exact per-block count of the pixels at the clipped edge;
* otherwise the float box stage: :meth:`WindowPath.to_float` clips float32 strips (relative to
  ``black``) for :func:`~data_processing.geometry.reduce_box`; identical up to float32 rounding;
* :meth:`WindowPath.post`: the affine map on the resized image.

State is explicit: a :class:`WindowPath` counts the padding pixels it masked (``padding_pixels``) and
records the range of its output (``content_range``) while ``fit_image`` runs it; an
:class:`IntegerWindow` is an immutable plan, and the per-strip kernel (:class:`ClipStrip`) carries its
own count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from data_processing.geometry import (
    box_sums,
    divide_by_block_counts,
    reduce_box,
    subtract_per_pixel,
)
from data_processing.reader import StoredPixels

__all__ = ["LinearMap", "linear_from_affine", "IntegerWindow", "integer_window", "ClipStrip", "WindowPath"]

PaddingRange = tuple[int, int]  # inclusive range of stored values that are padding
_MAX_SPAN = 0x1FFFF  # widest integer clip range worth the integer path (17 bits)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class LinearMap:
    """display = scale * clip(x, lo, hi) + offset on stored values x; ``black`` is the clip value giving 0."""

    lo: float
    hi: float
    scale: float
    offset: float

    @property
    def black(self) -> float:
        return self.lo if self.scale > 0 else self.hi


def _snap(value: float) -> float:
    """``value`` rounded to an integer when it is one up to float64 rounding (window edges computed by division)."""
    nearest = round(value)
    return float(nearest) if abs(value - nearest) <= 1e-9 * max(1.0, abs(value)) else value


def linear_from_affine(a: float, b: float, invert: bool) -> LinearMap | None:
    """The map for y = clip(a*x + b, 0, 1), then y -> 1 - y when ``invert``.

    None when float32 arithmetic cannot carry it (a slope that underflows to 0, window edges or a
    slope beyond float32's range: absurd header values), so that the caller takes the float64
    lookup-table path instead.
    """
    if a == 0.0 or not (math.isfinite(a) and math.isfinite(b)):
        return None
    x0, x1 = -b / a, (1.0 - b) / a  # stored values where y = 0 and y = 1
    if not (math.isfinite(x0) and math.isfinite(x1)):
        return None
    lo, hi = _snap(min(x0, x1)), _snap(max(x0, x1))  # integer edges stay integers despite the division
    linear = LinearMap(lo, hi, -a, 1.0 - b) if invert else LinearMap(lo, hi, a, b)
    if max(abs(lo), abs(hi), abs(linear.scale), hi - lo) > _FLOAT32_MAX or np.float32(linear.scale) == 0.0:
        return None
    return linear


# ----------------------------------------------------------------------------------------------------
# The integer box stage


@dataclass(frozen=True)
class IntegerWindow:
    """Plan of the exact integer box stage for one image (from :func:`integer_window`).

    The stage sums ``clip(q*x, cl, ch)`` per block, where ``q*lo`` and ``q*hi`` (window edges in
    units of 1/q stored value) are within ``corr_lo = q*lo - cl`` and ``corr_hi = q*hi - ch`` of the
    integer clip limits; ``need_low``/``need_high`` say that those corrections apply to some pixel
    (one more integer pass counts them per block).
    """

    q: int  # 1, or 2: x is doubled so that half-integer window edges become integers
    cl: int  # integer clip range of q * x
    ch: int
    corr_lo: float
    corr_hi: float
    need_low: bool
    need_high: bool
    clip: bool  # some stored value lies outside [cl, ch] (else the clip changes nothing)
    work: np.dtype  # dtype of q * x (and of its clip)
    signed: bool  # the stored values are signed
    pad: PaddingRange | None
    black_low: bool  # black is the low clip limit (else the high one): where padding pixels go
    fix: Callable[[np.ndarray], np.ndarray]  # StoredPixels.fix_strip: unused high bits corrected
    raw_sums_ok: bool  # q = 1, unsigned, no padding, no bit fix: the stored values can be summed as they are

    @property
    def origin(self) -> float:
        """The stored value the block means are relative to: they are means of ``clip(x, lo, hi) - origin``."""
        return self.cl / self.q

    def fits(self, k: int) -> bool:
        """Whether ``k`` x ``k`` sums of the clipped values fit in 32 bits (not for > 180 x 180 blocks of 16-bit values)."""
        return k * k * (self.ch - self.cl) < 2**32

    def block_means(self, src: np.ndarray, k: int) -> tuple[np.ndarray, int]:
        """Block means of ``clip(x, lo, hi) - origin`` over ``k`` x ``k`` blocks of the stored values ``src`` [H, W].

        Returns (float32 [ceil(H/k), ceil(W/k)], number of padding pixels). Needs :meth:`fits`.
        """
        base = self._sum_base(k)
        scratch: dict[tuple[tuple[int, int], np.dtype], np.ndarray] = {}  # buffers shared by the passes
        first = ClipStrip(self, self.cl, self.ch, base, scratch, count_padding=True)
        sums = self._sums(src, k, first)  # [Ho, Wo] sums of clip(q*x, cl, ch) - base
        n_low = n_high = None
        if self.need_low:  # pixels at cl per block: they count q*lo
            n_low = self._sums(src, k, ClipStrip(self, self.cl + 1, self.ch, base, scratch)) - sums
        if self.need_high:  # pixels at ch per block: they count q*hi
            n_high = sums - self._sums(src, k, ClipStrip(self, self.cl, self.ch - 1, base, scratch))
        height, width = src.shape
        if base != self.cl:  # sums of clip(q*x) - cl, still exact integers
            subtract_per_pixel(sums, self.cl - base, height, width, k)
        total = sums.astype(np.float32)  # exact below 2**24
        if n_low is not None:
            total += n_low.astype(np.float32) * np.float32(self.corr_lo)
        if n_high is not None:
            total += n_high.astype(np.float32) * np.float32(self.corr_hi)
        divide_by_block_counts(total, height, width, k)
        if self.q != 1:
            total *= np.float32(1.0 / self.q)  # exact for q = 2
        return total, first.padding_pixels

    def _sum_base(self, k: int) -> int:
        """The value subtracted from every clipped value before summing: cl where that narrows the sums, else 0."""
        span = self.ch - self.cl  # the clipped values minus cl lie in [0, span]
        same_width = (k * self.ch <= 0xFFFF) == (k * span <= 0xFFFF) and (k * k * self.ch <= 0xFFFF) == (
            k * k * span <= 0xFFFF
        )
        return 0 if not self.signed and self.cl >= 0 and same_width else self.cl

    def _sums(self, src: np.ndarray, k: int, kernel: ClipStrip) -> np.ndarray:
        """Integer block sums of ``kernel``'s values (the stored values themselves where nothing changes them)."""
        if self.raw_sums_ok and kernel.base == 0 and not kernel.clips:
            return box_sums(src, k, None, max_value=self.ch)
        return box_sums(src, k, kernel, max_value=self.ch - kernel.base)


def integer_window(linear: LinearMap, stored: StoredPixels, pad: PaddingRange | None) -> IntegerWindow | None:
    """Plan the exact integer box stage for ``linear`` on ``stored``, or None to use the float path.

    With ``q = 1``, or ``q = 2`` where the window edges are half-integers (odd widths), ``q*lo`` and
    ``q*hi`` are integers, and clipping ``q*x`` to the integers ``cl = floor(q*lo)``, ``ch =
    ceil(q*hi)`` and summing gives every pixel its clipped value (times q). Where an edge is still
    fractional (say a rescale slope of 0.7) and some pixel lies there, the pixels at ``cl`` should
    count ``q*lo``: one more integer pass clipped to ``cl + 1`` counts them per block, and the sums are
    corrected by ``q*lo - cl`` per pixel (likewise at ``ch``); with both edges in that case, the float
    path is as fast, and is used. Padding pixels are set to the black end of the clip range, so they
    count exactly ``q*lo`` (or ``q*hi``), which the affine map turns into 0. The range of the stored
    values (often known from decoding) skips a clip that would change nothing and picks the
    narrowest accumulators.
    """
    vmin, vmax = stored.bounds()  # contains every value (no pass over the pixels just for this)
    q = 1 if linear.lo == math.floor(linear.lo) and linear.hi == math.floor(linear.hi) else 2
    lo, hi = _snap(q * linear.lo), _snap(q * linear.hi)  # window edges in units of 1/q stored value
    if q == 2 and (lo != math.floor(lo) or hi != math.floor(hi)):
        q, lo, hi = 1, linear.lo, linear.hi  # not half-integers either: corrections below
    qmin, qmax = q * vmin, q * vmax  # the range of q * x
    black_low = linear.scale > 0  # black is lo (else hi)
    low_black, high_black = pad is not None and black_low, pad is not None and not black_low
    if lo > qmin or low_black:  # some pixel shows as lo: clip to floor(lo)
        cl = math.floor(lo)
        corr_lo = lo - cl
    else:
        cl, corr_lo = qmin, 0.0
    if hi < qmax or high_black:
        ch = math.ceil(hi)
        corr_hi = hi - ch
    else:
        ch, corr_hi = qmax, 0.0
    src_dtype = stored.array.dtype
    signed = src_dtype.kind == "i"
    work = src_dtype  # dtype of q * x (and of its clip)
    if q == 2:
        wide = np.dtype(np.int32 if signed else np.uint32)
        limits = np.iinfo(src_dtype)
        work = src_dtype if limits.min <= 2 * min(vmin, 0) and 2 * vmax <= limits.max else wide
    limits = np.iinfo(work)
    if not limits.min <= cl < ch <= limits.max or ch - cl > _MAX_SPAN:
        return None  # the window misses the data (a flat image, explained by the float path)
    need_low = corr_lo != 0.0 and (qmin <= cl or low_black)  # pixels at cl must count lo
    need_high = corr_hi != 0.0 and (qmax >= ch or high_black)
    if need_low and need_high:
        return None  # three integer passes: no faster than the float path
    return IntegerWindow(
        q=q,
        cl=cl,
        ch=ch,
        corr_lo=corr_lo,
        corr_hi=corr_hi,
        need_low=need_low,
        need_high=need_high,
        clip=qmin < cl or qmax > ch,
        work=work,
        signed=signed,
        pad=pad,
        black_low=black_low,
        fix=stored.fix_strip,
        raw_sums_ok=q == 1 and not signed and pad is None and stored.needs_bit_fix is False,
    )


class ClipStrip:
    """Strip kernel of the integer box stage (a :data:`~data_processing.geometry.Prepare` for ``box_sums``).

    Maps stored rows [n, W] to ``clip(q*x, low, high) - base`` in the accumulator buffer (modulo its
    width: exact, since the true values are non-negative), with padding pixels set to the black end
    of the clip range. With ``count_padding`` it adds the padding pixels it sees to
    :attr:`padding_pixels`. ``scratch`` holds reusable work buffers (shared by the passes over one image).
    """

    def __init__(
        self,
        window: IntegerWindow,
        low: int,
        high: int,
        base: int,
        scratch: dict[tuple[tuple[int, int], np.dtype], np.ndarray],
        *,
        count_padding: bool = False,
    ) -> None:
        self.window = window
        self.low, self.high, self.base = low, high, base
        self.clips = window.clip or low != window.cl or high != window.ch  # the clip changes some value
        self.count_padding = count_padding
        self.padding_pixels = 0
        self._scratch = scratch

    def _buffer(self, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        tmp = self._scratch.get((shape, dtype))
        if tmp is None:
            tmp = self._scratch[(shape, dtype)] = np.empty(shape, dtype)
        return tmp

    def __call__(self, strip: np.ndarray, buf: np.ndarray) -> np.ndarray:
        w, low, high, base = self.window, self.low, self.high, self.base
        x = w.fix(strip)  # [n, W] stored values
        y = x
        if w.q == 2:
            y = self._buffer(x.shape, w.work)
            np.add(x, x, out=y, dtype=w.work)  # 2x, exact in ``work``
        if base == 0:
            if self.clips:
                np.clip(y, low, high, out=buf, casting="unsafe")
            else:
                np.copyto(buf, y, casting="unsafe")
        else:
            if self.clips:
                y = np.clip(y, low, high, out=self._buffer(x.shape, w.work) if w.q == 1 else y)
            wrapped = buf.dtype.type(base % (1 << (8 * buf.dtype.itemsize)))  # base modulo 2**bits
            np.subtract(y, wrapped, out=buf, dtype=buf.dtype, casting="unsafe")  # exact modulo 2**bits
        if w.pad is not None:
            pad = w.pad
            mask = (x == pad[0]) if pad[0] == pad[1] else ((x >= pad[0]) & (x <= pad[1]))
            if self.count_padding:
                self.padding_pixels += int(np.count_nonzero(mask))
            np.copyto(buf, (low if w.black_low else high) - base, where=mask, casting="unsafe")
        return buf


# ----------------------------------------------------------------------------------------------------
# The whole fast path for one image


class WindowPath:
    """``fit_image``'s stages for one image under a linear window: box stage, then the affine map.

    ``integer`` is the plan from :func:`integer_window` (the exact integer box stage), or None for the
    float box stage (:meth:`to_float` strips into ``reduce_box``). After ``fit_image`` has run,
    ``padding_pixels`` holds the number of padding pixels masked and ``content_range`` the (min, max)
    of the output before padding to the square.
    """

    def __init__(
        self,
        linear: LinearMap,
        stored: StoredPixels,
        pad: PaddingRange | None,
        integer: IntegerWindow | None,
    ) -> None:
        self.pad = pad
        self.integer = integer
        self._fix = stored.fix_strip
        # float box stage values are relative to black (precision, and padding/clipped pixels give exactly 0)
        self._black = np.float32(linear.black)
        self._lo32, self._hi32 = np.float32(linear.lo) - self._black, np.float32(linear.hi) - self._black
        # black relative to the box stage's values (the integer stage's are relative to its origin)
        self._black_rel = np.float32(0.0) if integer is None else np.float32(linear.black - integer.origin)
        self._scale = np.float32(linear.scale)
        self.padding_pixels = 0
        self.content_range: tuple[float, float] | None = None

    @property
    def reduce(self) -> Callable[[np.ndarray, int], np.ndarray] | None:
        """The box stage for ``fit_image(reduce=...)``: the integer stage, or None (float strips via :meth:`to_float`)."""
        return None if self.integer is None else self._reduce_integer

    def to_float(self, strip: np.ndarray, out: np.ndarray) -> None:
        """Float box stage strip kernel: ``out`` (float32 [n, W]) = clip(x, lo, hi) - black, padding 0."""
        x = self._fix(strip)
        np.subtract(x, self._black, out=out, casting="unsafe")
        np.clip(out, self._lo32, self._hi32, out=out)
        if self.pad is not None:
            pad = self.pad
            mask = (x == pad[0]) if pad[0] == pad[1] else ((x >= pad[0]) & (x <= pad[1]))
            n = int(np.count_nonzero(mask))
            if n:
                self.padding_pixels += n
                np.copyto(out, 0.0, where=mask)

    def _reduce_integer(self, src: np.ndarray, k: int) -> np.ndarray:
        """Block means of clip(x, lo, hi) - origin: float32 [ceil(H/k), ceil(W/k)]."""
        window = self.integer
        assert window is not None
        if not window.fits(k):  # absurd reductions: the float box stage, shifted to the same origin
            out = reduce_box(src, k, self.to_float) + self._black
            out -= np.float32(window.cl / window.q)
            return out
        means, padding = window.block_means(src, k)
        self.padding_pixels += padding
        return means

    def post(self, img: np.ndarray) -> np.ndarray:
        """The affine map on the resized image, written as scale * (x - black) so that black gives exactly 0."""
        y = img - self._black_rel
        with np.errstate(over="ignore"):  # windows narrower than float32 can resolve: +-inf, clipped next
            y *= self._scale
        np.clip(y, 0.0, 1.0, out=y)
        self.content_range = (float(y.min()), float(y.max()))
        return y
