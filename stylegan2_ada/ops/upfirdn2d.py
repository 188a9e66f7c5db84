"""FIR resampling: upsample by zero insertion, pad (or crop), filter, downsample by decimation.

Semantics (per spatial dimension, the same for x and y):

    u[j*up] = x[j]                  (zeros between samples; length L*up)
    v[i]    = u[i - pad0]           (pad0/pad1 zeros before/after; negative values crop)
    y[n]    = sum_t f[t] * v[n + K - 1 - t]     (true convolution with the K-tap filter, 'valid')
    z[m]    = gain * y[m*down]

so the output length is ``(L*up + pad0 + pad1 - K) // down + 1``. ``flip_filter=True`` correlates instead
of convolving (identical for the symmetric filters StyleGAN uses).

The filter runs as one depthwise ``conv2d`` (padding and decimation folded into the convolution's
padding and stride), which is a single pass over memory; on CPU this was measured 3x faster than
separable tap sums over strided views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

FilterLike = Union[torch.Tensor, None]


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
    """(fw, fh) of a [fh, fw] or [K] filter tensor; ``None`` is the identity (1, 1)."""
    if f is None:
        return 1, 1
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
        f: [fh, fw] filter tensor, [K] (separable: outer(f, f)), or ``None`` (identity).
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

    if f is None:
        f = torch.ones([1, 1], device=x.device)
    if f.ndim == 1:
        f = torch.outer(f, f)
    w = f.to(x.dtype) * gain
    if not flip_filter:  # conv2d correlates: flip for a true convolution
        w = w.flip([0, 1])
    fh, fw = w.shape
    channels = x.shape[1]

    x = _zero_insert(x, up_x, up_y)  # [N, C, H*up_y, W*up_x]
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        conv_padding = (py0, px0)
    else:
        x = F.pad(x, [px0, px1, py0, py1])  # negative values crop
        conv_padding = (0, 0)
    if x.shape[2] < fh or x.shape[3] < fw:
        raise ValueError(
            f"upfirdn2d: the padded input {tuple(x.shape[2:])} is smaller than the filter {(fh, fw)}"
        )
    return F.conv2d(
        x,
        w[None, None].expand(channels, 1, fh, fw),
        stride=(down_y, down_x),
        padding=conv_padding,
        groups=channels,
    )


def filter2d(
    x: torch.Tensor,
    f: FilterLike,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
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
