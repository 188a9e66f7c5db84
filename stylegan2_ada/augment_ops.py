"""Building blocks for the ADA augmentation pipeline (:mod:`stylegan2_ada.augment`).

Everything here is pure PyTorch, works on any device, and is differentiable (twice) with respect
to the images. Conventions used throughout:

* Images are ``[N, C, H, W]`` floating point tensors.
* Geometric matrices are homogeneous ``[N, 3, 3]`` maps in *centred pixel coordinates*: pixel
  ``(col, row)`` sits at ``(col - (W - 1) / 2, row - (H - 1) / 2)``; x points right, y points down.
  An "inverse" matrix maps an *output* pixel position to the *input* position it is read from.
* Colour matrices are homogeneous ``[N, 4, 4]`` maps acting on ``(r, g, b, 1)``.

Wavelet coefficients are the standard decomposition low-pass filters of the symlet family, as
tabulated by PyWavelets (``pywt.Wavelet('sym6').dec_lo`` / ``pywt.Wavelet('sym2').dec_lo``) and at
http://wavelets.pybytes.com/wavelet/sym6/ ; sym2 equals the closed form
``[1 - sqrt3, 3 - sqrt3, 3 + sqrt3, 1 + sqrt3] / (4 sqrt2)`` (Daubechies' D4, reversed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# Symlet-6 decomposition low-pass filter (12 taps, sum = sqrt(2)); source: PyWavelets 'sym6' dec_lo.
SYM6_DEC_LO: tuple[float, ...] = (
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
)

# Symlet-2 decomposition low-pass filter (4 taps, sum = sqrt(2)); source: PyWavelets 'sym2' dec_lo.
SYM2_DEC_LO: tuple[float, ...] = (
    -0.12940952255092145,
    0.22414386804185735,
    0.836516303737469,
    0.48296291314469025,
)

# Relative power the filter-bank augmentation expects in each band (roughly a 1/f spectrum).
FBANK_EXPECTED_POWER: tuple[float, ...] = (10 / 13, 1 / 13, 1 / 13, 1 / 13)


# ----------------------------------------------------------------------------------------------
# Filters


def geom_lowpass_filter() -> Tensor:
    """The anti-aliasing filter of the geometric stage: sym6 normalised to unit DC gain.

    Returns:
        float32 tensor [12]; ``sum() == 1``.
    """
    h = torch.tensor(SYM6_DEC_LO, dtype=torch.float64)
    return (h / h.sum()).to(torch.float32)


def _dilate(f: Tensor, factor: int) -> Tensor:
    """Insert ``factor - 1`` zeros between the taps of a 1-D filter [K] -> [(K - 1) * factor + 1]."""
    if factor == 1:
        return f
    out = f.new_zeros((f.numel() - 1) * factor + 1)
    out[::factor] = f
    return out


def _convolve(a: Tensor, b: Tensor) -> Tensor:
    """Full 1-D linear convolution of two filters [Ka], [Kb] -> [Ka + Kb - 1]."""
    out = a.new_zeros(a.numel() + b.numel() - 1)
    for i in range(b.numel()):
        out[i : i + a.numel()] += a * b[i]
    return out


def _centre_pad(f: Tensor, length: int) -> Tensor:
    """Zero-pad an odd-length filter symmetrically to ``length`` taps."""
    extra = length - f.numel()
    assert extra >= 0 and extra % 2 == 0
    return F.pad(f, (extra // 2, extra // 2))


def filter_bank(h: Sequence[float] = SYM2_DEC_LO, num_bands: int = 4) -> Tensor:
    """Octave band-split filter bank built from an orthogonal wavelet's low-pass filter ``h``.

    With ``lo = h * reverse(h) / 2`` (the half-band low-pass, zero-phase) and ``hi`` its mirror
    ``lo[k] * (-1)**k`` (so ``lo + hi`` is a unit impulse), band ``b`` of ``B`` is:

    * band 0 (lowest):      ``lo↑2^(B-2) * ... * lo↑2 * lo``
    * band b in 1..B-1:     ``hi↑2^(B-1-b) * lo↑2^(B-2-b) * ... * lo``  (band B-1 is just ``hi``)

    where ``f↑d`` inserts ``d - 1`` zeros between taps and ``*`` is convolution. Every band is
    symmetric and centred; the bands sum to a unit impulse (perfect reconstruction); band 0 has DC
    gain 1 and the others DC gain 0. For sym2 and 4 bands this gives 43 taps.

    Returns:
        float32 tensor [num_bands, taps].
    """
    base = torch.tensor(list(h), dtype=torch.float64)
    sign = torch.tensor([(-1.0) ** k for k in range(base.numel())], dtype=torch.float64)
    lo = _convolve(base, base.flip(0)) / 2  # [2K - 1], zero phase
    hi = _convolve(base * sign, (base * sign).flip(0)) / 2

    bands = []
    for b in range(num_bands):
        if b == 0:
            f = torch.ones(1, dtype=torch.float64)
            lo_levels = range(num_bands - 1)
        else:
            f = _dilate(hi, 2 ** (num_bands - 1 - b))
            lo_levels = range(num_bands - 1 - b)
        for level in lo_levels:
            f = _convolve(f, _dilate(lo, 2**level))
        bands.append(f)
    taps = max(f.numel() for f in bands)
    return torch.stack([_centre_pad(f, taps) for f in bands]).to(torch.float32)


# ----------------------------------------------------------------------------------------------
# Batched homogeneous matrices (inputs are per-sample tensors [N]; outputs [N, 3, 3] or [N, 4, 4])


def _identity(size: int, like: Tensor) -> Tensor:
    return torch.eye(size, dtype=like.dtype, device=like.device).repeat(like.shape[0], 1, 1)


def translate2d(tx: Tensor, ty: Tensor) -> Tensor:
    """[N] shifts in pixels -> [N, 3, 3]."""
    m = _identity(3, tx)
    m[:, 0, 2] = tx
    m[:, 1, 2] = ty
    return m


def scale2d(sx: Tensor, sy: Tensor) -> Tensor:
    """[N] axis scale factors -> [N, 3, 3]."""
    m = _identity(3, sx)
    m[:, 0, 0] = sx
    m[:, 1, 1] = sy
    return m


def rotate2d(theta: Tensor) -> Tensor:
    """[N] angles in radians -> [N, 3, 3] rotation ``[[cos, -sin], [sin, cos]]``."""
    m = _identity(3, theta)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1] = c, -s
    m[:, 1, 0], m[:, 1, 1] = s, c
    return m


def translate_rgb(offset: Tensor) -> Tensor:
    """[N] offset added to every colour channel -> [N, 4, 4]."""
    m = _identity(4, offset)
    m[:, :3, 3] = offset[:, None]
    return m


def scale_rgb(factor: Tensor) -> Tensor:
    """[N] factor multiplying every colour channel -> [N, 4, 4]."""
    m = _identity(4, factor)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = factor
    return m


def luma_axis(like: Tensor) -> Tensor:
    """Unit vector along the grey axis in homogeneous colour space: [4] = (1, 1, 1, 0) / sqrt(3)."""
    return torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=like.dtype, device=like.device) / math.sqrt(3)


def reflect_luma(flip: Tensor) -> Tensor:
    """[N] in {0, 1} -> [N, 4, 4]: identity, or the Householder reflection ``I - 2 v v^T`` on luma."""
    v = luma_axis(flip)
    return _identity(4, flip) - 2 * torch.outer(v, v) * flip[:, None, None]


def rotate_about_luma(theta: Tensor) -> Tensor:
    """[N] angles -> [N, 4, 4]: Rodrigues rotation about the luma axis (a hue rotation)."""
    v = luma_axis(theta)[:3]
    k = 1 / math.sqrt(3)  # every component of the unit luma axis
    cross = k * torch.tensor(  # [v]_x, the cross-product matrix of v
        [[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], dtype=theta.dtype, device=theta.device
    )
    c = torch.cos(theta)[:, None, None]
    s = torch.sin(theta)[:, None, None]
    eye3 = torch.eye(3, dtype=theta.dtype, device=theta.device)
    m = _identity(4, theta)
    m[:, :3, :3] = c * eye3 + s * cross + (1 - c) * torch.outer(v, v)
    return m


def scale_chroma(factor: Tensor) -> Tensor:
    """[N] factors -> [N, 4, 4]: keep the luma component, scale the orthogonal (chroma) part."""
    v = luma_axis(factor)
    vv = torch.outer(v, v)
    eye4 = torch.eye(4, dtype=factor.dtype, device=factor.device)
    return vv + (eye4 - vv) * factor[:, None, None]


# ----------------------------------------------------------------------------------------------
# Pixel-level helpers


def reflect_index(index: Tensor, size: int) -> Tensor:
    """Fold integer positions into ``[0, size)`` by mirroring about the edge pixels.

    Same convention as ``F.pad(mode='reflect')`` (the edge pixel is not repeated), extended
    periodically so that any offset is valid: for size 4, ``-2 -1 0 1 2 3 4 5`` -> ``2 1 0 1 2 3 2 1``.
    """
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    folded = torch.remainder(index, period)
    return torch.where(folded < size, folded, period - folded)


def reflect_pad(images: Tensor, left: int, right: int, top: int, bottom: int) -> Tensor:
    """Mirror-pad [N, C, H, W] -> [N, C, H + top + bottom, W + left + right] (any pad size)."""
    _, _, h, w = images.shape
    if max(left, right) < w and max(top, bottom) < h:  # within one reflection: torch's fast path
        return F.pad(images, (left, right, top, bottom), mode="reflect")
    dev = images.device
    cols = reflect_index(torch.arange(-left, w + right, device=dev), w)
    rows = reflect_index(torch.arange(-top, h + bottom, device=dev), h)
    return images.index_select(3, cols).index_select(2, rows)


def blit(images: Tensor, inv: Tensor) -> Tensor:
    """Exact integer-grid warp (flips, 90° rotations, integer shifts), reflecting at the borders.

    Args:
        images: [N, C, H, W].
        inv: [N, 3, 3] inverse map in centred pixel coordinates whose linear part has entries in
            {-1, 0, 1} and whose translation is a whole number of pixels.
    Returns:
        [N, C, H, W]; every output pixel is a copy of one input pixel.
    """
    n, c, h, w = images.shape
    m = torch.round(inv).long()  # [N, 3, 3], exact small integers
    # Doubled centred coordinates are integers for odd and even sizes alike: 2 col - (W - 1).
    xs = (2 * torch.arange(w, device=images.device) - (w - 1))[None, None, :]  # [1, 1, W]
    ys = (2 * torch.arange(h, device=images.device) - (h - 1))[None, :, None]  # [1, H, 1]

    def coeff(i: int, j: int) -> Tensor:
        return m[:, i, j, None, None]  # [N, 1, 1]

    src_x = coeff(0, 0) * xs + coeff(0, 1) * ys + 2 * coeff(0, 2)  # [N, H, W], doubled
    src_y = coeff(1, 0) * xs + coeff(1, 1) * ys + 2 * coeff(1, 2)
    # For square images the sums keep the parity of 2 col - (W - 1), so the halving is exact.
    col = reflect_index(torch.div(src_x + (w - 1), 2, rounding_mode="floor"), w)
    row = reflect_index(torch.div(src_y + (h - 1), 2, rounding_mode="floor"), h)
    flat = (row * w + col).reshape(n, 1, h * w).expand(n, c, h * w)
    return images.reshape(n, c, h * w).gather(2, flat).reshape(n, c, h, w)


def _separable(images: Tensor, fn) -> Tensor:
    """Run a single-channel 2-D op ``fn([M, 1, H, W])`` on every channel of [N, C, H, W]."""
    n, c, h, w = images.shape
    out = fn(images.reshape(n * c, 1, h, w))
    return out.reshape(n, c, out.shape[2], out.shape[3])


def _upsample_phases(f: Tensor, dtype: torch.dtype) -> tuple[Tensor, int]:
    """Polyphase form of :func:`upsample2x`'s filter: ([2, 1, 2R + 1] kernels, R)."""
    taps = f.numel()
    lead = taps // 2 - 1  # output index n reads filter tap n - 2k + lead for input sample k
    reach = taps // 4 + 1
    g = (f * 2).to(torch.float64)  # gain 2 per axis keeps the DC level after zero insertion
    kernel = torch.zeros(2, 1, 2 * reach + 1, dtype=torch.float64)
    for phase in range(2):  # output 2j + phase
        for d in range(-reach, reach + 1):  # reads input j + d
            tap = phase - 2 * d + lead
            if 0 <= tap < taps:
                kernel[phase, 0, d + reach] = g[tap]
    return kernel.to(dtype=dtype, device=f.device), reach


def upsample2x(images: Tensor, f: Tensor) -> Tensor:
    """2x upsampling: zero insertion then the FIR ``2 f`` per axis (true convolution).

    Computed in polyphase form (two short convolutions interleaved). Input sample ``k`` lands at
    upsampled position ``2k + 1/2`` for a symmetric even-length ``f`` (half-pixel centres).
    [N, C, H, W] -> [N, C, 2H, 2W].
    """
    assert f.numel() % 2 == 0, "expects an even-length filter"
    kernel, reach = _upsample_phases(f, images.dtype)  # [2, 1, K]

    def op(x: Tensor) -> Tensor:
        m, _, h, w = x.shape
        x = F.conv2d(F.pad(x, (0, 0, reach, reach)), kernel[:, :, :, None])  # [M, 2, H, W]
        x = x.permute(0, 2, 1, 3).reshape(m, 1, 2 * h, w)  # interleave the phases along rows
        x = F.conv2d(F.pad(x, (reach, reach, 0, 0)), kernel[:, :, None, :])  # [M, 2, 2H, W]
        return x.permute(0, 2, 3, 1).reshape(m, 1, 2 * h, 2 * w)  # ... and along columns

    return _separable(images, op)


def downsample2x(images: Tensor, f: Tensor, crop: int) -> Tensor:
    """FIR ``f`` per axis (correlation) then keep every other sample, after cropping ``crop`` px.

    The mirror of :func:`upsample2x`: output ``m`` is centred on input position
    ``2 (m + crop / 2) + 1/2`` for a symmetric ``f``. [N, C, 2H + 2 crop, ...] -> [N, C, H, W].
    """
    taps = f.numel()
    k = f.to(images.dtype)
    skip = crop - taps // 2 + 1  # first input sample touched by output 0
    assert skip >= 0

    def op(x: Tensor) -> Tensor:
        x = x[:, :, skip : x.shape[2] - skip, skip : x.shape[3] - skip]
        x = F.conv2d(x, k.reshape(1, 1, taps, 1), stride=(2, 1))
        return F.conv2d(x, k.reshape(1, 1, 1, taps), stride=(1, 2))

    return _separable(images, op)


def resample(images: Tensor, inv: Tensor, lowpass: Tensor) -> Tensor:
    """Apply a general per-sample affine warp with anti-aliasing (the ADA geometric stage).

    Steps: mirror-pad by the margin the warp reads beyond the image (plus filter slack), 2x
    upsample with ``lowpass``, bilinear ``grid_sample`` (zeros outside, never reached), 2x
    downsample with ``lowpass``. Pure PyTorch; ``F.grid_sample`` supports double backward with
    respect to its input.

    Args:
        images: [N, C, H, W].
        inv: [N, 3, 3] output -> input map, centred pixel coordinates.
        lowpass: [K] even-length low-pass filter with unit DC gain (``Hz_geom``).
    Returns:
        [N, C, H, W].
    """
    n, c, h, w = images.shape
    inv = inv.to(torch.float64 if images.dtype == torch.float64 else torch.float32)
    slack = lowpass.numel() // 4  # output pixels of filter support needed beyond each border
    cx, cy = (w - 1) / 2, (h - 1) / 2

    # How far outside the image the warped output corners read, per side.
    corners = torch.tensor(
        [[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1.0, 1.0, 1.0, 1.0]], dtype=inv.dtype, device=inv.device
    )  # [3, 4]
    src = (inv @ corners)[:, :2, :]  # [N, 2, 4]
    centre = torch.tensor([cx, cy], dtype=inv.dtype, device=inv.device)
    limit = torch.tensor([w - 1, h - 1], dtype=inv.dtype, device=inv.device)
    need_lo = ((-src).amax(dim=(0, 2)) - centre + 2 * slack).clamp(min=0).minimum(limit)  # [2] x, y
    need_hi = (src.amax(dim=(0, 2)) - centre + 2 * slack).clamp(min=0).minimum(limit)
    left, top, right, bottom = (int(v) for v in torch.cat([need_lo, need_hi]).ceil().tolist())

    x = reflect_pad(images, left, right, top, bottom)
    ones = torch.ones(n, dtype=inv.dtype, device=inv.device)
    m = translate2d(ones * (left - right) / 2, ones * (top - bottom) / 2) @ inv

    # Upsampled frame: coordinates double. The sym6 filter pair is not linear-phase; moving the
    # frame origin by half an upsampled pixel keeps warps centred on the image (as upstream does).
    x = upsample2x(x, lowpass)
    to_up = translate2d(-0.5 * ones, -0.5 * ones) @ scale2d(2 * ones, 2 * ones)
    from_up = scale2d(0.5 * ones, 0.5 * ones) @ translate2d(0.5 * ones, 0.5 * ones)
    m = to_up @ m @ from_up

    out_h, out_w = 2 * (h + 2 * slack), 2 * (w + 2 * slack)
    in_h, in_w = x.shape[2], x.shape[3]
    xs = torch.arange(out_w, dtype=inv.dtype, device=inv.device) - (out_w - 1) / 2
    ys = torch.arange(out_h, dtype=inv.dtype, device=inv.device) - (out_h - 1) / 2
    gx, gy = xs[None, None, :], ys[None, :, None]
    src_x = m[:, 0, 0, None, None] * gx + m[:, 0, 1, None, None] * gy + m[:, 0, 2, None, None]
    src_y = m[:, 1, 0, None, None] * gx + m[:, 1, 1, None, None] * gy + m[:, 1, 2, None, None]
    # grid_sample with align_corners=False: normalised = centred pixel coordinate * 2 / size.
    grid = torch.stack([src_x * (2 / in_w), src_y * (2 / in_h)], dim=-1).to(images.dtype)  # [N, oh, ow, 2]
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    return downsample2x(x, lowpass, crop=2 * slack)


def fir_filter(images: Tensor, kernels: Tensor) -> Tensor:
    """Filter each sample with its own symmetric separable FIR kernel, mirror padding the borders.

    Args:
        images: [N, C, H, W].
        kernels: [N, K] (K odd) per-sample 1-D kernels, applied along both axes to every channel.
    Returns:
        [N, C, H, W].
    """
    n, c, h, w = images.shape
    taps = kernels.shape[1]
    half = taps // 2
    x = reflect_pad(images, half, half, half, half).reshape(1, n * c, h + 2 * half, w + 2 * half)
    k = kernels.to(images.dtype)[:, None, :].expand(n, c, taps).reshape(n * c, 1, taps)
    x = F.conv2d(x, k[:, :, :, None], groups=n * c)
    x = F.conv2d(x, k[:, :, None, :], groups=n * c)
    return x.reshape(n, c, h, w)
