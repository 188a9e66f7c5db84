"""Geometry: aspect-preserving, anti-aliased resize to a square training image (pad or centre crop).

The resize is Pillow's "reducing gap" scheme done in our own strip loop: the source is first reduced by
an integer factor ``k`` with a box filter (exact block means), then resampled to the target size with a
Lanczos filter (a = 3) on float32 data, so the result is anti-aliased and close to a full Lanczos
resize (``k`` = floor(scale / 2), as Pillow's ``reducing_gap=2``). The box stage runs over horizontal
strips of the source that fit in the CPU cache, and calls an optional per-strip ``to_float`` function
first: the rendering code uses it to fuse its per-pixel grey-level transform into the same pass, so a
2000 x 2000 image is read from memory once.

Both stages are linear filters whose weights sum to one, so an affine grey-level map commutes with
them: ``fit_image(x, post=lambda y: a*y + b)`` equals ``fit_image(a*x + b)`` up to float rounding
(the rendering fast path relies on this).

Modes (``crop``):
    ``"pad"`` (default): scale so that the long side is ``resolution``; centre on a black square.
    ``"center"``: crop the central square (side = the short side) of the source, then scale it.
"""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
from PIL import Image

__all__ = ["CropMode", "REDUCING_GAP", "fit_image", "fitted_size", "is_power_of_two", "reduce_box", "resample_lanczos"]

CropMode = Literal["pad", "center"]
#: Like Pillow's ``reducing_gap``: the box stage reduces by k = floor(scale / REDUCING_GAP).
REDUCING_GAP = 2.0
_STRIP_BYTES = 384 * 1024  # float32 bytes per strip: fits the L2 cache with the source strip

ToFloat = Callable[[np.ndarray, np.ndarray], None]


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
    default a plain cast. Rows are summed strip by strip (the strip stays in the CPU cache between
    ``to_float`` and the sums); columns are summed once at the end.
    """
    if src.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {src.shape}")
    if k < 1:
        raise ValueError(f"reduction factor must be >= 1, got {k}")
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
    ho, wo = -(-height // k), -(-width // k)
    rows = np.empty((ho, width), np.float32)  # sums over k rows [Ho, W]
    buf = np.empty((min(strip_rows, height), width), np.float32)  # one strip [strip rows, W]
    for r0 in range(0, height, strip_rows):
        n = min(strip_rows, height - r0)
        strip = buf[:n]
        to_float(src[r0 : r0 + n], strip)
        nb, rem = divmod(n, k)
        o0 = r0 // k
        if nb:
            v = strip[: nb * k].reshape(nb, k, width)  # [blocks, k, W]
            dst = rows[o0 : o0 + nb]
            np.add(v[:, 0], v[:, 1], out=dst)
            for i in range(2, k):
                np.add(dst, v[:, i], out=dst)
        if rem:  # the last, partial block row
            np.sum(strip[nb * k :], axis=0, dtype=np.float32, out=rows[o0 + nb])
    out = np.empty((ho, wo), np.float32)
    full_w = (width // k) * k
    nfull = full_w // k
    if nfull:
        cols = rows[:, :full_w].reshape(ho, nfull, k)  # [Ho, Wo_full, k]
        d = out[:, :nfull]
        np.add(cols[:, :, 0], cols[:, :, 1], out=d)
        for i in range(2, k):
            np.add(d, cols[:, :, i], out=d)
    if width > full_w:
        np.sum(rows[:, full_w:], axis=1, dtype=np.float32, out=out[:, nfull])
    # divide by the number of pixels in each block (k*k, fewer on the last row/column)
    row_counts = np.full((ho, 1), k, np.float32)
    col_counts = np.full((1, wo), k, np.float32)
    if height % k:
        row_counts[-1, 0] = height % k
    if width % k:
        col_counts[0, -1] = width % k
    out /= row_counts * col_counts
    return out


def resample_lanczos(
    img: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float] | None = None
) -> np.ndarray:
    """Lanczos (a = 3, anti-aliased when shrinking) resample of float32 ``img`` [h, w] to ``size`` (H, W).

    ``box`` = (left, upper, right, lower) is the source region in pixel coordinates (default: all).
    """
    h, w = img.shape
    if box is None:
        box = (0.0, 0.0, float(w), float(h))
    if (h, w) == tuple(size) and box == (0.0, 0.0, float(w), float(h)):
        return np.array(img, dtype=np.float32, copy=True)
    pil = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32))  # mode "F"
    out = pil.resize((size[1], size[0]), Image.Resampling.LANCZOS, box=box)
    return np.asarray(out, dtype=np.float32)


def fit_image(
    src: np.ndarray,
    resolution: int | None,
    crop: CropMode = "pad",
    *,
    to_float: ToFloat | None = None,
    post: Callable[[np.ndarray], np.ndarray] | None = None,
    pad_value: float = 0.0,
) -> np.ndarray:
    """Fit ``src`` [H, W] into a ``resolution`` square: float32 [R, R] (or [H, W] when ``resolution`` is None).

    ``to_float`` converts source strips to float32 (see :func:`reduce_box`); ``post`` maps the resized
    float image (e.g. an affine grey-level map) before padding; padding uses ``pad_value``.
    """
    if resolution is None:
        img = reduce_box(src, 1, to_float)
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
    reduced = reduce_box(src, k, to_float)  # [ceil(H/k), ceil(W/k)]
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
