"""StyleGAN2's modulated convolution with weight demodulation."""

from __future__ import annotations

import torch

from stylegan2_ada.ops.conv2d_resample import conv2d_resample
from stylegan2_ada.ops.upfirdn2d import FilterLike


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample output scales that give the modulated weights unit L2 norm.

    For modulated weights ``W'[n,o,i,k] = W[o,i,k] * s[n,i]``:
    ``d[n,o] = rsqrt(sum_{i,k} W'[n,o,i,k]^2 + eps) = rsqrt(sum_i s[n,i]^2 * sum_k W[o,i,k]^2 + eps)``,
    computed as one [N, I] x [I, O] product without materialising the [N, O, I, kh, kw] weights.

    Args:
        weight: [O, I, kh, kw]. styles: [N, I]. Returns: [N, O] (float32 math for float32 inputs).
    """
    w_sq = weight.square().sum(dim=[2, 3])  # [O, I]
    return (styles.square() @ w_sq.t() + eps).rsqrt()  # [N, O]


def _scale_and_shift(
    x: torch.Tensor,
    scale: torch.Tensor | None,
    bias: torch.Tensor | None,
    noise: torch.Tensor | None,
    in_place: bool,
) -> torch.Tensor:
    """``x * scale + bias + noise`` for x [N, O, H, W], scale [N, O, 1, 1], bias [O, 1, 1] and noise
    broadcastable to x (each optional). The result keeps x's memory layout (a full-size [O, H, W] or
    [N, O, H, W] shift would impose its own). ``in_place`` overwrites ``x`` (a temporary of the caller)
    instead of allocating: on CPU a fresh activation-sized buffer costs page faults on every call,
    several times the arithmetic."""
    if scale is not None and bias is not None:
        x = torch.addcmul(bias, x, scale, out=x) if in_place else torch.addcmul(bias, x, scale)
    elif scale is not None:
        x = x.mul_(scale) if in_place else x * scale
    elif bias is not None:
        x = x.add_(bias) if in_place else x + bias
    if noise is not None:
        x = x.add_(noise) if in_place else x + noise
    return x


def _is_channels_last(x: torch.Tensor) -> bool:
    """Whether [N, C, H, W] ``x`` is laid out NHWC (and not also NCHW, as when C or H*W is 1). Inside
    ``torch.func`` transforms the layout cannot be queried; the answer is then False (layout changes
    speed, never values)."""
    try:
        return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    except RuntimeError:
        return False


def _modulated_pointwise(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, coefs: torch.Tensor | float | None
) -> torch.Tensor:
    """1x1 modulated convolution without resampling as one batched matrix product with per-sample
    weights [N, O, I] (cheap to build for a 1x1 kernel): no pass over x to scale it, and no convolution
    kernel, whose 1x1, few-output-channel case (ToRGB) is slow on CPU. ``coefs``: per-output scales
    [N, O] (demodulation and gain), a scalar, or None. Returns [N, O, H, W] in x's memory layout."""
    n, in_ch, h, w = x.shape
    wn = weight[:, :, 0, 0].unsqueeze(0) * styles.unsqueeze(1)  # [N, O, I]
    if isinstance(coefs, torch.Tensor):
        wn = wn * coefs.unsqueeze(2)
    elif coefs is not None:
        wn = wn * coefs
    wn = wn.to(x.dtype)
    if _is_channels_last(x):
        y = torch.bmm(x.permute(0, 2, 3, 1).reshape(n, h * w, in_ch), wn.transpose(1, 2))  # [N, HW, O]
        return y.reshape(n, h, w, -1).permute(0, 3, 1, 2)
    return torch.bmm(wn, x.reshape(n, in_ch, h * w)).reshape(n, -1, h, w)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    resample_filter: FilterLike = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = False,
    bias: torch.Tensor | None = None,
    gain: float = 1.0,
) -> torch.Tensor:
    """Convolve each sample with its own style-modulated (and demodulated) kernel.

    Returns ``gain * (conv(x, W'(styles)) + noise + bias)``: the optional bias and output gain are folded
    into the same pass as demodulation (a positively homogeneous activation such as lrelu can then be
    applied without a separate gain pass).

    Without autograd (``torch.is_grad_enabled()`` false) the epilogue works in place on the
    convolution's output, which only this function holds; ``x`` and every other input are never modified.

    Args:
        x: [N, I, H, W] input activations (float32, or float16 on CUDA).
        weight: [O, I, kh, kw] shared kernel (float32 parameter).
        styles: [N, I] per-sample input-channel scales.
        noise: broadcastable to [N, O, H', W'], added after demodulation (before bias/activation).
        up, down, padding, resample_filter, flip_weight: as :func:`conv2d_resample`.
        demodulate: normalise each output channel of the modulated kernel to unit norm.
        fused_modconv: run one grouped convolution with per-sample kernels instead of scaling the
            activations around a shared convolution. Same result; which is faster depends on the device
            and batch size (the non-fused form batches better on CPU). A 1x1 kernel without resampling
            always runs as one batched matrix product.
        bias: [O] added after noise. gain: scales the whole output.
    Returns:
        [N, O, H', W'] in x's dtype.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    in_place = not torch.is_grad_enabled()

    # Keep float16 activations in range: pre-normalise by the infinity norms (cancels under demodulation).
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (
            1 / (in_ch * kh * kw) ** 0.5 / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    dcoefs = demodulation_coefficients(weight, styles) if demodulate else None  # [N, O]

    # Epilogue: out = conv * scale + bias + noise, all already multiplied by gain (small tensors only).
    b = bias.to(x.dtype).reshape(-1, 1, 1) * gain if bias is not None else None  # [O, 1, 1]
    nz = noise.to(x.dtype) * gain if noise is not None else None  # e.g. [H', W'] or [N, 1, H', W']

    if kh == 1 and kw == 1 and up == 1 and down == 1 and padding == 0:
        coefs = dcoefs * gain if dcoefs is not None else (gain if gain != 1 else None)
        y = _modulated_pointwise(x, weight, styles, coefs)  # [N, O, H, W], demodulated, with gain
        return _scale_and_shift(y, None, b, nz, in_place)

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)  # [N, I, H, W]
        y = conv2d_resample(
            x,
            weight.to(x.dtype),
            f=resample_filter,
            up=up,
            down=down,
            padding=padding,
            flip_weight=flip_weight,
        )  # [N, O, H', W']
        scale = dcoefs * gain if dcoefs is not None else None
        if scale is None and gain != 1:
            scale = torch.full([n, out_ch], gain, dtype=torch.float32, device=x.device)
        scale = scale.to(x.dtype).reshape(n, -1, 1, 1) if scale is not None else None
        return _scale_and_shift(y, scale, b, nz, in_place)

    # Fused: per-sample kernels [N, O, I, kh, kw] as one grouped convolution over a [1, N*I, H, W] input.
    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
    if dcoefs is not None:
        w = w * (dcoefs * gain).reshape(n, -1, 1, 1, 1)
    elif gain != 1:
        w = w * gain
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    y = conv2d_resample(
        x,
        w.to(x.dtype),
        f=resample_filter,
        up=up,
        down=down,
        padding=padding,
        groups=n,
        flip_weight=flip_weight,
    )
    y = y.reshape(n, -1, *y.shape[2:])
    return _scale_and_shift(y, None, b, nz, in_place)
