"""FIR resampling: upsample by zero insertion, pad (or crop), filter, downsample by decimation.

Semantics (per spatial dimension, the same for x and y):

    u[j*up] = x[j]                  (zeros between samples; length L*up)
    v[i]    = u[i - pad0]           (pad0/pad1 zeros before/after; negative values crop)
    y[n]    = sum_t f[t] * v[n + K - 1 - t]     (true convolution with the K-tap filter, 'valid')
    z[m]    = gain * y[m*down]

so the output length is ``(L*up + pad0 + pad1 - K) // down + 1``. ``flip_filter=True`` correlates instead
of convolving (identical for the symmetric filters StyleGAN uses).

Filters are separable in practice ([1,3,3,1] outer [1,3,3,1]); a separable filter runs as two 1-D tap
sums over strided views, which costs a few element-wise passes and no convolution kernel at all. A
non-separable 2-D filter falls back to a depthwise ``conv2d``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SeparableFilter:
    """A separable FIR filter as Python floats: ``f2d = outer(taps_y, taps_x)``."""

    taps_y: tuple[float, ...]
    taps_x: tuple[float, ...]

    @property
    def size(self) -> tuple[int, int]:
        """(fw, fh): filter width and height in taps."""
        return len(self.taps_x), len(self.taps_y)


FilterLike = Union[torch.Tensor, SeparableFilter, None]


def setup_filter(
    f: Sequence[float] | np.ndarray | torch.Tensor | None,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1.0,
    separable: bool | None = None,
) -> torch.Tensor:
    """Build a float32 filter tensor: [fh, fw] (2-D) or [K] (1-D, separable).

    A 1-D list with fewer than 8 taps becomes the 2-D outer product unless ``separable=True`` (this is the
    form StyleGAN2 stores in its ``resample_filter`` buffers: [4, 4] for [1, 3, 3, 1]). ``normalize``
    scales the taps to sum to 1 (per dimension for 2-D); ``gain`` multiplies the total response.
    """
    if f is None:
        f = [1.0]
    t = torch.as_tensor(f, dtype=torch.float32)
    if t.ndim == 0:
        t = t[None]
    if separable is None:
        separable = t.ndim == 1 and t.numel() >= 8
    if t.ndim == 1 and not separable:
        t = torch.outer(t, t)
    if normalize:
        t = t / t.sum()
    if flip_filter:
        t = t.flip(list(range(t.ndim)))
    t = t * (gain ** (t.ndim / 2))
    return t.to(device=device)


def filter_taps(f: FilterLike, rtol: float = 1e-6) -> SeparableFilter | None:
    """Factor ``f`` into a :class:`SeparableFilter`, or return ``None`` when a 2-D filter is not rank 1.

    For a rank-1 [fh, fw] filter with total sum s != 0: taps_y = f.sum(1)/sqrt(|s|), taps_x = f.sum(0)/sqrt(|s|)
    (signs fixed so that outer(taps_y, taps_x) == f). Reads the tensor on the host (a tiny copy).
    """
    if f is None:
        return SeparableFilter((1.0,), (1.0,))
    if isinstance(f, SeparableFilter):
        return f
    a = f.detach().to("cpu", torch.float64)
    if a.ndim == 1:
        taps = tuple(float(v) for v in a)
        return SeparableFilter(taps, taps)
    s = float(a.sum())
    if s == 0:
        return None
    ty = a.sum(1) / abs(s) ** 0.5
    tx = a.sum(0) / abs(s) ** 0.5 * (1.0 if s > 0 else -1.0)
    if not torch.allclose(torch.outer(ty, tx), a, rtol=rtol, atol=1e-12 + rtol * float(a.abs().max())):
        return None
    return SeparableFilter(tuple(float(v) for v in ty), tuple(float(v) for v in tx))


def _parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """int or [x, y] or [x0, x1, y0, y1] -> (px0, px1, py0, py1)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) == 4:
        return padding[0], padding[1], padding[2], padding[3]
    raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1]; got {padding!r}")


def _parse_scale(s: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(s, int):
        return s, s
    sx, sy = (int(v) for v in s)
    return sx, sy


def filter_size(f: FilterLike) -> tuple[int, int]:
    """(fw, fh) of a filter tensor, :class:`SeparableFilter` or ``None`` (1, 1)."""
    if f is None:
        return 1, 1
    if isinstance(f, SeparableFilter):
        return f.size
    if f.ndim == 1:
        return int(f.shape[0]), int(f.shape[0])
    return int(f.shape[-1]), int(f.shape[-2])


def _zero_insert(x: torch.Tensor, up_x: int, up_y: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, H*up_y, W*up_x] with the samples at multiples of up and zeros between."""
    if up_x == 1 and up_y == 1:
        return x
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, up_x - 1, 0, 0, 0, up_y - 1])
    return x.reshape(n, c, h * up_y, w * up_x)


def _tap_sum(x: torch.Tensor, taps: Sequence[float], dim: int, down: int) -> torch.Tensor:
    """True 1-D convolution ('valid') of ``x`` along ``dim`` (-1 or -2) with ``taps``, keeping every ``down``-th output."""
    k = len(taps)
    n_out = (x.shape[dim] - k) // down + 1
    if n_out <= 0:
        raise ValueError(f"upfirdn2d: the padded input ({x.shape[dim]}) is smaller than the filter ({k})")
    span = (n_out - 1) * down + 1
    out = None
    for t in range(k):
        g = taps[k - 1 - t]  # convolution: flip the taps
        if g == 0:
            continue
        view = x.narrow(dim, t, span)
        if down > 1:
            view = view[..., ::down] if dim == -1 else view[..., ::down, :]
        out = view * g if out is None else out.add(view, alpha=g)
    if out is None:  # an all-zero filter
        shape = list(x.shape)
        shape[dim] = n_out
        out = x.new_zeros(shape)
    return out


def upfirdn2d(
    x: torch.Tensor,
    f: FilterLike,
    up: int | Sequence[int] = 1,
    down: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample a batch of images (semantics in the module docstring).

    Args:
        x: [N, C, H, W] float tensor.
        f: [fh, fw] or [K] filter tensor, a :class:`SeparableFilter`, or ``None`` (identity).
        up, down: integer factors, one for both axes or (x, y).
        padding: int, [px, py] or [px0, px1, py0, py1] in upsampled pixels; negative values crop.
        flip_filter: correlate instead of convolve.
        gain: overall scale of the output.
    Returns:
        [N, C, (H*up_y + py0 + py1 - fh) // down_y + 1, (W*up_x + px0 + px1 - fw) // down_x + 1].
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [N, C, H, W]; got shape {tuple(x.shape)}")
    up_x, up_y = _parse_scale(up)
    down_x, down_y = _parse_scale(down)
    px0, px1, py0, py1 = _parse_padding(padding)

    x = _zero_insert(x, up_x, up_y)
    if px0 or px1 or py0 or py1:
        x = F.pad(x, [px0, px1, py0, py1])  # negative values crop

    sep = filter_taps(f)
    if sep is not None:
        taps_y, taps_x = sep.taps_y, sep.taps_x
        if flip_filter:
            taps_y, taps_x = taps_y[::-1], taps_x[::-1]
        if gain != 1:
            taps_x = tuple(t * gain for t in taps_x)
        if len(taps_x) > 1 or down_x > 1 or taps_x[0] != 1:
            x = _tap_sum(x, taps_x, -1, down_x)
        if len(taps_y) > 1 or down_y > 1 or taps_y[0] != 1:
            x = _tap_sum(x, taps_y, -2, down_y)
        return x

    # Non-separable 2-D filter: depthwise convolution (conv2d correlates, so flip for a true convolution).
    assert isinstance(f, torch.Tensor)
    w = (f * gain).to(x.dtype)
    if not flip_filter:
        w = w.flip([0, 1])
    c = x.shape[1]
    w = w[None, None].expand(c, 1, *w.shape)
    x = F.conv2d(x, w, groups=c)
    if down_x > 1 or down_y > 1:
        x = x[:, :, ::down_y, ::down_x]
    return x


def filter2d(
    x: torch.Tensor, f: FilterLike, padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1.0
) -> torch.Tensor:
    """Filter without resampling; by default the output has the input's size ("same" padding)."""
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain)


def upsample2d(
    x: torch.Tensor,
    f: FilterLike,
    up: int | Sequence[int] = 2,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample [N, C, H, W] -> [N, C, H*up, W*up] with the FIR filter ``f``, keeping the DC gain."""
    up_x, up_y = _parse_scale(up)
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)
    pad = [
        px0 + (fw + up_x - 1) // 2,
        px1 + (fw - up_x) // 2,
        py0 + (fh + up_y - 1) // 2,
        py1 + (fh - up_y) // 2,
    ]
    return upfirdn2d(x, f, up=(up_x, up_y), padding=pad, flip_filter=flip_filter, gain=gain * up_x * up_y)


def downsample2d(
    x: torch.Tensor,
    f: FilterLike,
    down: int | Sequence[int] = 2,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """Downsample [N, C, H, W] -> [N, C, H//down, W//down] with the FIR filter ``f`` (anti-aliasing)."""
    down_x, down_y = _parse_scale(down)
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)
    pad = [
        px0 + (fw - down_x + 1) // 2,
        px1 + (fw - down_x) // 2,
        py0 + (fh - down_y + 1) // 2,
        py1 + (fh - down_y) // 2,
    ]
    return upfirdn2d(x, f, down=(down_x, down_y), padding=pad, flip_filter=flip_filter, gain=gain)
