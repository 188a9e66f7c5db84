"""2-D convolution combined with FIR up- or down-sampling by 2 (or any integer factor).

Equivalent to: upsample the input with :func:`upsample2d`, convolve with ``padding``, then downsample
with :func:`downsample2d`; but cheaper:

* ``down > 1``: filter the input at its own resolution, then a strided convolution computes only the
  kept outputs (a 1x1 kernel is applied after the decimating filter, at the low resolution).
* ``up > 1``: a transposed convolution inserts the zeros for free; the FIR filter then runs once on the
  result (a 1x1 kernel is applied before upsampling, at the low resolution).

``flip_weight=True`` (the default) correlates like ``torch.nn.functional.conv2d``; ``False`` performs a
true convolution (kernel flipped). StyleGAN2 uses ``flip_weight = (up == 1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stylegan2_ada.ops.upfirdn2d import FilterLike, _parse_padding, filter_size, upfirdn2d


def _conv(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    flip_weight: bool = True,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    if not flip_weight and w.shape[-1] * w.shape[-2] > 1:
        w = w.flip([2, 3])
    return F.conv2d(x, w, bias, stride=stride, padding=padding, groups=groups)


def _add_bias(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x if bias is None else x + bias.reshape(1, -1, 1, 1)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: FilterLike = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Convolve [N, C_in, H, W] with ``w`` [C_out, C_in/groups, kh, kw], resampling by ``up`` or ``down``.

    ``padding`` is the convolution's padding at the resampled resolution (``kernel_size // 2`` keeps the
    size). ``f`` is the resampling FIR filter (needed when up or down > 1). ``bias`` [C_out] is added to
    the output (inside the convolution kernel where the convolution is the last step). Output:
    [N, C_out, H*up//down, W*up//down] for ``padding = k // 2`` and odd k.
    """
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample: use either up or down, not both")
    out_ch, in_per_group, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    if down > 1:
        pad = [
            px0 + (fw - down + 1) // 2,
            px1 + (fw - down) // 2,
            py0 + (fh - down + 1) // 2,
            py1 + (fh - down) // 2,
        ]
        if kw == 1 and kh == 1:
            x = upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter)
            return _conv(x, w, groups=groups, flip_weight=flip_weight, bias=bias)
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight, bias=bias)

    if up > 1:
        pad = [px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2]
        if kw == 1 and kh == 1:
            x = _conv(x, w, groups=groups, flip_weight=flip_weight)
            return _add_bias(upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=up * up), bias)
        # Transposed convolution = true convolution of the zero-inserted input; account for its extent.
        pad = [pad[0] - (kw - 1), pad[1] - (kw - up), pad[2] - (kh - 1), pad[3] - (kh - up)]
        if flip_weight:  # correlation semantics requested: flip, since conv_transpose2d convolves
            w = w.flip([2, 3])
        if groups == 1:
            wt = w.transpose(0, 1)  # [C_in, C_out, kh, kw]
        else:
            wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        x = F.conv_transpose2d(x, wt, stride=up, groups=groups)
        return _add_bias(upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=up * up), bias)

    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=(py0, px0), groups=groups, flip_weight=flip_weight, bias=bias)
    x = F.pad(x, [px0, px1, py0, py1])
    return _conv(x, w, groups=groups, flip_weight=flip_weight, bias=bias)
