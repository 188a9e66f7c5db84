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
    into the same pass as demodulation and noise (a positively homogeneous activation such as lrelu can
    then be applied without a separate gain pass).

    Args:
        x: [N, I, H, W] input activations (float32, or float16 on CUDA).
        weight: [O, I, kh, kw] shared kernel (float32 parameter).
        styles: [N, I] per-sample input-channel scales.
        noise: broadcastable to [N, O, H', W'], added after demodulation (before bias/activation).
        up, down, padding, resample_filter, flip_weight: as :func:`conv2d_resample`.
        demodulate: normalise each output channel of the modulated kernel to unit norm.
        fused_modconv: run one grouped convolution with per-sample kernels instead of scaling the
            activations around a shared convolution. Same result; which is faster depends on the device
            and batch size (the non-fused form batches better on CPU).
        bias: [O] added after noise. gain: scales the whole output.
    Returns:
        [N, O, H', W'] in x's dtype.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape

    # Keep float16 activations in range: pre-normalise by the infinity norms (cancels under demodulation).
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (
            1 / (in_ch * kh * kw) ** 0.5 / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    dcoefs = demodulation_coefficients(weight, styles) if demodulate else None  # [N, O]

    # Epilogue pieces: out = conv * scale + shift, with scale [N, O, 1, 1] and shift broadcastable.
    shift = None
    if noise is not None:
        shift = noise.to(x.dtype)
    if bias is not None:
        b = bias.to(x.dtype).reshape(-1, 1, 1)
        shift = b if shift is None else shift + b
    if shift is not None and gain != 1:
        shift = shift * gain

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)  # [N, I, H, W]
        x = conv2d_resample(
            x,
            weight.to(x.dtype),
            f=resample_filter,
            up=up,
            down=down,
            padding=padding,
            flip_weight=flip_weight,
        )  # [N, O, H', W']
        if dcoefs is not None:
            scale = (dcoefs * gain).to(x.dtype).reshape(n, -1, 1, 1)
            return torch.addcmul(shift, x, scale) if shift is not None else x * scale
    else:
        # Fused: per-sample kernels [N, O, I, kh, kw] as one grouped convolution over a [1, N*I, H, W] input.
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
        if dcoefs is not None:
            w = w * dcoefs.reshape(n, -1, 1, 1, 1)
        x = x.reshape(1, -1, *x.shape[2:])
        w = w.reshape(-1, in_ch, kh, kw)
        x = conv2d_resample(
            x,
            w.to(x.dtype),
            f=resample_filter,
            up=up,
            down=down,
            padding=padding,
            groups=n,
            flip_weight=flip_weight,
        )
        x = x.reshape(n, -1, *x.shape[2:])
    if gain != 1:
        x = x * gain
    return x + shift if shift is not None else x
