"""Geometry: aspect-preserving, anti-aliased resize to a square training image (pad or centre crop).

The resize is Pillow's "reducing gap" scheme done in our own code: the source is first reduced by an
integer factor ``k`` with a box filter (exact block means), then resampled to the target size with a
Lanczos filter (a = 3, the kernel support widened by the scale factor, so it anti-aliases) on float32
data, so the result is anti-aliased and close to a full Lanczos resize (``k`` = floor(scale / 2), as
Pillow's ``reducing_gap=2``).

* Box stage: :func:`reduce_box` (float) runs over horizontal strips of the source that fit in the CPU
  cache and calls an optional per-strip ``to_float`` function first, so the rendering code can fuse
  its per-pixel grey-level transform into the same pass. :func:`box_sums` is its integer twin: exact
  block sums of integer pixels (uint16 accumulators where the range allows, else uint32), several
  times faster than converting every pixel to float first; the renderer's window fast path uses it.
* Lanczos stage: :func:`resample_lanczos` computes Pillow's Lanczos weights (``precompute_coeffs``:
  same support, centres and normalisation) once per geometry and applies them as two banded float32
  matrix products (blocks of 16 output pixels times the input span they need), instead of Pillow's
  scalar double loop: the same filter, ~1e-6 apart, 3-4 times faster.

Both stages are linear filters whose weights sum to one, so an affine grey-level map commutes with
them: ``fit_image(x, post=lambda y: a*y + b)`` equals ``fit_image(a*x + b)`` up to float rounding
(the rendering fast path relies on this).

Modes (``crop``):
    ``"pad"`` (default): scale so that the long side is ``resolution``; centre on a black square.
    ``"center"``: crop the central square (side = the short side) of the source, then scale it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Literal

import numpy as np

__all__ = [
    "REDUCING_GAP",
    "CropMode",
    "block_counts",
    "box_sums",
    "divide_by_block_counts",
    "fit_image",
    "fitted_size",
    "is_power_of_two",
    "lanczos_weights",
    "reduce_box",
    "resample_lanczos",
    "subtract_per_pixel",
]

CropMode = Literal["pad", "center"]
#: Like Pillow's ``reducing_gap``: the box stage reduces by k = floor(scale / REDUCING_GAP).
REDUCING_GAP = 2.0
_STRIP_BYTES = 384 * 1024  # float32 bytes per strip: fits the L2 cache with the source strip
_INT_STRIP_BYTES = 1024 * 1024  # accumulator bytes per strip of the integer box stage (measured best)
_LANCZOS_A = 3.0  # Lanczos lobes (Pillow's LANCZOS)
_BAND = 16  # output pixels per block of the banded Lanczos products (16: fewest multiply-adds per call)
# multiply-adds per matrix product: OpenBLAS runs products of m*n*k <= 65536 * 4 on the calling thread;
# larger ones wake its thread pool, which costs far more than these small products (100x on a busy machine)
_TILE_MACS = 65536 * 4

ToFloat = Callable[[np.ndarray, np.ndarray], None]
#: ``prepare(strip, buf) -> values``: integer values [n, W] (in [0, max_value]) of source rows ``strip``,
#: written into ``buf`` (accumulator dtype, same shape) or returned as any other integer array.
Prepare = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: ``reduce(src, k) -> float32 [ceil(H/k), ceil(W/k)]``: the box stage (block means) of ``src`` [H, W].
Reduce = Callable[[np.ndarray, int], np.ndarray]


def _copy_to_float(src: np.ndarray, out: np.ndarray) -> None:
    np.copyto(out, src, casting="unsafe")


def fitted_size(height: int, width: int, resolution: int, crop: CropMode) -> tuple[int, int]:
    """Size (h, w) of the image content inside the ``resolution`` square (before padding)."""
    if crop == "center":
        return resolution, resolution
    if crop != "pad":
        raise ValueError(f"crop must be 'pad' or 'center', not {crop!r}")
    scale = resolution / max(height, width)
    return max(1, min(resolution, round(height * scale))), max(1, min(resolution, round(width * scale)))


def reduce_box(src: np.ndarray, k: int, to_float: ToFloat | None = None) -> np.ndarray:
    """Block means of ``k`` x ``k`` blocks: float32 [ceil(H/k), ceil(W/k)] from ``src`` [H, W].

    The last block row/column may be partial; it is the mean of the pixels it has. ``to_float(strip,
    out)`` converts a strip of source rows (any dtype, shape [n, W]) into ``out`` (float32 [n, W]); by
    default a plain cast. Rows, then columns, are summed strip by strip (the strip stays in the CPU
    cache between ``to_float`` and the sums).
    """
    _check_box_args(src, k)
    to_float = to_float or _copy_to_float
    height, width = src.shape
    blocks_per_strip = max(1, _STRIP_BYTES // (4 * width * k))
    strip_rows = blocks_per_strip * k
    if k == 1:
        out = np.empty((height, width), np.float32)
        for r0 in range(0, height, strip_rows):
            n = min(strip_rows, height - r0)
            to_float(src[r0 : r0 + n], out[r0 : r0 + n])
        return out
    out = np.empty((-(-height // k), -(-width // k)), np.float32)  # [Ho, Wo]
    rows = np.empty((-(-min(strip_rows, height) // k), width), np.float32)  # one strip's sums over k rows
    buf = np.empty((min(strip_rows, height), width), np.float32)  # one strip [strip rows, W]
    for r0 in range(0, height, strip_rows):
        n = min(strip_rows, height - r0)
        strip = buf[:n]
        to_float(src[r0 : r0 + n], strip)
        nb = -(-n // k)
        _sum_row_blocks(strip, k, rows)
        _sum_column_blocks(rows[:nb], k, np.float32, out=out[r0 // k : r0 // k + nb])
    return divide_by_block_counts(out, height, width, k)


def box_sums(
    src: np.ndarray, k: int, prepare: Prepare | None = None, max_value: int | None = None
) -> np.ndarray:
    """Exact integer sums of ``k`` x ``k`` blocks: uint16 or uint32 [ceil(H/k), ceil(W/k)] from ``src`` [H, W].

    ``prepare(strip, buf)`` maps a strip of source rows [n, W] to the non-negative integers to sum,
    each at most ``max_value`` (default: ``src`` itself, which must then be unsigned). The
    accumulators are uint16 where ``k * max_value`` (rows) and ``k * k * max_value`` (blocks) fit,
    else uint32, so the sums never overflow. Partial last blocks hold the sum of the pixels they have
    (divide by :func:`block_counts` for means). Strips of about 1 MiB stay in the CPU cache between
    ``prepare`` and the row sums, and each strip's row sums stay there for its column sums.
    """
    _check_box_args(src, k)
    if prepare is None:
        if src.dtype.kind != "u":
            raise ValueError(f"box_sums needs a prepare function for {src.dtype} pixels")
        max_value = int(np.iinfo(src.dtype).max) if max_value is None else max_value
    elif max_value is None:
        raise ValueError("box_sums: max_value is required with a prepare function")
    if max_value < 0 or k * k * max_value >= 2**32:
        raise ValueError(f"box_sums: {k} x {k} sums of values up to {max_value} do not fit in 32 bits")
    height, width = src.shape
    row_dtype = np.uint16 if k * max_value <= 0xFFFF else np.uint32
    out_dtype = np.uint16 if k * k * max_value <= 0xFFFF else np.uint32
    strip_rows = max(1, _INT_STRIP_BYTES // (np.dtype(row_dtype).itemsize * width * k)) * k
    buf = (
        None if prepare is None else np.empty((min(strip_rows, height), width), row_dtype)
    )  # [strip rows, W]
    out = np.empty((-(-height // k), -(-width // k)), out_dtype)  # [Ho, Wo]
    if k == 1:
        for r0 in range(0, height, strip_rows):
            n = min(strip_rows, height - r0)
            strip = src[r0 : r0 + n]
            np.copyto(out[r0 : r0 + n], strip if buf is None else prepare(strip, buf[:n]), casting="unsafe")  # type: ignore[misc]
        return out
    rows = np.empty(
        (-(-min(strip_rows, height) // k), width), row_dtype
    )  # one strip's sums over k rows [n/k, W]
    for r0 in range(0, height, strip_rows):
        n = min(strip_rows, height - r0)
        strip = src[r0 : r0 + n]
        values = strip if buf is None else prepare(strip, buf[:n])  # type: ignore[misc]
        nb = -(-n // k)
        _sum_row_blocks(values, k, rows)
        # columns now, while the strip's row sums are still in the CPU cache
        _sum_column_blocks(rows[:nb], k, out_dtype, out=out[r0 // k : r0 // k + nb])
    return out


def block_counts(height: int, width: int, k: int) -> np.ndarray:
    """Pixels per ``k`` x ``k`` block of an [H, W] image: float32 [ceil(H/k), ceil(W/k)] (k*k, less at the edges)."""
    ho, wo = -(-height // k), -(-width // k)
    row_counts = np.full((ho, 1), k, np.float32)
    col_counts = np.full((1, wo), k, np.float32)
    if height % k:
        row_counts[-1, 0] = height % k
    if width % k:
        col_counts[0, -1] = width % k
    return row_counts * col_counts


def divide_by_block_counts(sums: np.ndarray, height: int, width: int, k: int) -> np.ndarray:
    """Block sums -> block means, in place: float32 ``sums`` [ceil(H/k), ceil(W/k)] of an [H, W] image."""
    sums /= np.float32(k * k)
    if height % k:  # the last block row has height % k rows
        sums[-1] *= np.float32(k / (height % k))
    if width % k:
        sums[:, -1] *= np.float32(k / (width % k))
    return sums


def subtract_per_pixel(sums: np.ndarray, value: int, height: int, width: int, k: int) -> np.ndarray:
    """``sums`` of ``k`` x ``k`` blocks of an [H, W] image minus ``value`` per pixel, in place (exact for integers).

    ``sums`` [ceil(H/k), ceil(W/k)] must hold at least ``value`` times each block's pixel count.
    """
    ho, wo = sums.shape
    rows_full, cols_full = height // k, width // k
    sums[:rows_full, :cols_full] -= sums.dtype.type(value * k * k)
    if height % k:
        sums[ho - 1, :cols_full] -= sums.dtype.type(value * (height % k) * k)
    if width % k:
        sums[:rows_full, wo - 1] -= sums.dtype.type(value * k * (width % k))
    if height % k and width % k:
        sums[ho - 1, wo - 1] -= sums.dtype.type(value * (height % k) * (width % k))
    return sums


def _check_box_args(src: np.ndarray, k: int) -> None:
    if src.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {src.shape}")
    if k < 1:
        raise ValueError(f"reduction factor must be >= 1, got {k}")


def _sum_row_blocks(strip: np.ndarray, k: int, dst_rows: np.ndarray) -> None:
    """Sums over each group of ``k`` rows of ``strip`` [n, W] into ``dst_rows`` [ceil(n/k) or more, W]."""
    n, width = strip.shape
    nb, rem = divmod(n, k)
    if nb:
        v = strip[: nb * k].reshape(nb, k, width)  # [blocks, k, W]
        dst = dst_rows[:nb]
        # add in the accumulator's dtype: uint8/uint16 pixels summed in their own dtype would wrap around
        np.add(v[:, 0], v[:, 1], out=dst, dtype=dst.dtype, casting="unsafe")
        for i in range(2, k):
            np.add(dst, v[:, i], out=dst, dtype=dst.dtype, casting="unsafe")
    if rem:  # the last, partial block row
        np.sum(strip[nb * k :], axis=0, dtype=dst_rows.dtype, out=dst_rows[nb])


def _sum_column_blocks(rows: np.ndarray, k: int, dtype: type, out: np.ndarray | None = None) -> np.ndarray:
    """Sums over each group of ``k`` columns of ``rows`` [Ho, W]: ``dtype`` [Ho, ceil(W/k)] (into ``out``
    when given)."""
    ho, width = rows.shape
    if k == 1:
        if out is None:
            return rows.astype(dtype, copy=False)
        np.copyto(out, rows, casting="unsafe")
        return out
    if out is None:
        out = np.empty((ho, -(-width // k)), dtype)
    full_w = (width // k) * k
    nfull = full_w // k
    if nfull:
        cols = rows[:, :full_w].reshape(ho, nfull, k)  # [Ho, Wo_full, k]
        d = out[:, :nfull]
        np.add(cols[:, :, 0], cols[:, :, 1], out=d, dtype=dtype)
        for i in range(2, k):
            np.add(d, cols[:, :, i], out=d, dtype=dtype)
    if width > full_w:
        np.sum(rows[:, full_w:], axis=1, dtype=dtype, out=out[:, nfull])
    return out


# ----------------------------------------------------------------------------------------------------
# Lanczos stage


def _lanczos_kernel(x: np.ndarray) -> np.ndarray:
    """sinc(x) * sinc(x / 3) on [-3, 3) (Pillow's ``lanczos_filter``), float64."""
    return np.where((x >= -_LANCZOS_A) & (x < _LANCZOS_A), np.sinc(x) * np.sinc(x / _LANCZOS_A), 0.0)


WeightBlock = tuple[int, int, int, int, np.ndarray]  # (j0, j1, i0, i1, weights [i1 - i0, j1 - j0])


@lru_cache(maxsize=64)
def lanczos_weights(in_size: int, in0: float, in1: float, out_size: int) -> tuple[WeightBlock, ...]:
    """Banded Lanczos weights mapping ``in_size`` samples (region [in0, in1)) to ``out_size`` samples.

    Pillow's ``precompute_coeffs``: output pixel j is centred at ``in0 + (j + 0.5) * scale`` with
    ``scale = (in1 - in0) / out_size``; the kernel is stretched by ``max(scale, 1)`` (so it
    anti-aliases when shrinking), truncated to the input, and normalised to sum to one. Returns
    blocks ``(j0, j1, i0, i1, w)``: output pixels j0..j1-1 use input samples i0..i1-1 with the
    read-only float32 weights ``w`` [i1 - i0, j1 - j0] (out = in[..., i0:i1] @ w).
    """
    scale = (in1 - in0) / out_size
    filterscale = max(scale, 1.0)
    support = _LANCZOS_A * filterscale
    centres = in0 + (np.arange(out_size) + 0.5) * scale
    starts = np.maximum(np.trunc(centres - support + 0.5), 0).astype(np.int64)  # C's (int) truncation
    stops = np.minimum(np.trunc(centres + support + 0.5), in_size).astype(np.int64)
    blocks = []
    for j0 in range(0, out_size, _BAND):
        j1 = min(j0 + _BAND, out_size)
        i0, i1 = int(starts[j0:j1].min()), int(stops[j0:j1].max())
        x = np.arange(i0, i1, dtype=np.float64)[:, None]  # [span, 1] input sample index
        w = _lanczos_kernel((x - centres[None, j0:j1] + 0.5) / filterscale)  # [span, band]
        inside = (x >= starts[None, j0:j1]) & (x < stops[None, j0:j1])
        w = np.where(inside, w, 0.0)
        total = w.sum(axis=0, keepdims=True)
        w = np.divide(w, total, out=np.zeros_like(w), where=total != 0).astype(np.float32)
        w.flags.writeable = False
        blocks.append((j0, j1, i0, i1, w))
    return tuple(blocks)


def resample_lanczos(
    img: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float] | None = None
) -> np.ndarray:
    """Lanczos (a = 3, anti-aliased when shrinking) resample of float32 ``img`` [h, w] to ``size`` (H, W).

    ``box`` = (left, upper, right, lower) is the source region in pixel coordinates (default: all).
    Pillow's ``Image.resize(LANCZOS, box=box)`` filter on mode "F", computed as banded float32 matrix
    products: horizontal pass [h, w] -> [h, W], then vertical pass -> [H, W].
    """
    h, w = img.shape
    if box is None:
        box = (0.0, 0.0, float(w), float(h))
    if (h, w) == tuple(size) and tuple(box) == (0.0, 0.0, float(w), float(h)):
        return np.array(img, dtype=np.float32, copy=True)
    out_h, out_w = size
    img = np.asarray(img, dtype=np.float32)
    cols = lanczos_weights(w, float(box[0]), float(box[2]), int(out_w))
    rows = lanczos_weights(h, float(box[1]), float(box[3]), int(out_h))
    r0, r1 = min(b[2] for b in rows), max(b[3] for b in rows)  # source rows the vertical pass reads
    tmp = np.empty((r1 - r0, out_w), np.float32)  # [rows used, W]
    for j0, j1, i0, i1, wt in cols:  # tmp[:, j0:j1] = img[rows, i0:i1] @ wt, in tiles of rows
        step = max(1, _TILE_MACS // ((i1 - i0) * (j1 - j0)))
        for t0 in range(r0, r1, step):
            t1 = min(t0 + step, r1)
            np.matmul(img[t0:t1, i0:i1], wt, out=tmp[t0 - r0 : t1 - r0, j0:j1])
    out = np.empty((out_h, out_w), np.float32)  # [H, W]
    for j0, j1, i0, i1, wt in rows:  # out[j0:j1] = wt.T @ tmp[i0:i1], in tiles of columns
        step = max(1, _TILE_MACS // ((i1 - i0) * (j1 - j0)))
        for c0 in range(0, out_w, step):
            c1 = min(c0 + step, out_w)
            np.matmul(wt.T, tmp[i0 - r0 : i1 - r0, c0:c1], out=out[j0:j1, c0:c1])
    return out


# ----------------------------------------------------------------------------------------------------
# The whole resize


def fit_image(
    src: np.ndarray,
    resolution: int | None,
    crop: CropMode = "pad",
    *,
    to_float: ToFloat | None = None,
    reduce: Reduce | None = None,
    post: Callable[[np.ndarray], np.ndarray] | None = None,
    pad_value: float = 0.0,
) -> np.ndarray:
    """Fit ``src`` [H, W] into a ``resolution`` square: float32 [R, R] (or [H, W] when ``resolution`` is None).

    The box stage is ``reduce(src, k)`` when given (block means, float32 [ceil(H/k), ceil(W/k)]; the
    renderer's integer path), else :func:`reduce_box` with ``to_float`` converting source strips to
    float32; ``post`` maps the resized float image (e.g. an affine grey-level map) before padding;
    padding uses ``pad_value``.
    """

    def box(image: np.ndarray, k: int) -> np.ndarray:
        return reduce(image, k) if reduce is not None else reduce_box(image, k, to_float)

    if resolution is None:
        img = box(src, 1)
        return post(img) if post is not None else img
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    height, width = src.shape
    if crop == "center":
        side = min(height, width)
        y0, x0 = (height - side) // 2, (width - side) // 2
        src = src[y0 : y0 + side, x0 : x0 + side]
        height = width = side
    th, tw = fitted_size(height, width, resolution, crop)
    scale = min(height / th, width / tw)
    k = max(1, int(scale / REDUCING_GAP))
    reduced = box(src, k)  # [ceil(H/k), ceil(W/k)]
    resized = resample_lanczos(reduced, (th, tw), box=(0.0, 0.0, width / k, height / k))  # [th, tw]
    if post is not None:
        resized = post(resized)
    if (th, tw) == (resolution, resolution):
        return np.ascontiguousarray(resized, dtype=np.float32)
    out = np.full((resolution, resolution), pad_value, np.float32)  # [R, R]
    y0, x0 = (resolution - th) // 2, (resolution - tw) // 2
    out[y0 : y0 + th, x0 : x0 + tw] = resized
    return out


def is_power_of_two(n: int) -> bool:
    """True for 1, 2, 4, 8, ..."""
    return n >= 1 and (n & (n - 1)) == 0
