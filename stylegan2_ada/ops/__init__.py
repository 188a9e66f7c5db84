"""Pure-PyTorch StyleGAN2 operations: CPU and CUDA, float32 and (CUDA) float16, twice differentiable,
friendly to ``torch.func`` (no in-place ops on inputs, no Python-level per-sample work, no custom builds)."""

from stylegan2_ada.ops.bias_act import ACTIVATIONS, bias_act
from stylegan2_ada.ops.conv2d_resample import conv2d_resample
from stylegan2_ada.ops.modulated_conv import modulated_conv2d
from stylegan2_ada.ops.upfirdn2d import (
    downsample2d,
    filter2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)

__all__ = [
    "ACTIVATIONS",
    "bias_act",
    "conv2d_resample",
    "modulated_conv2d",
    "upfirdn2d",
    "upsample2d",
    "downsample2d",
    "filter2d",
    "setup_filter",
]
