"""StyleGAN2 generator and discriminator, architecturally identical to NVIDIA's stylegan2-ada-pytorch.

Same constructor signatures (a snapshot's stored ``init_kwargs`` construct them directly), the same
``state_dict`` names and shapes, and the same forward semantics, written from the published architecture
(Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN"; "Training Generative
Adversarial Networks with Limited Data"). Mixed precision (float16) runs only on CUDA; on other devices
every block computes in float32.

Notation in shape comments: N batch, C channels, H/W height/width, R img_resolution,
Z z_dim, Wd w_dim, L num_ws.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from stylegan2_ada.ops import (
    bias_act,
    conv2d_resample,
    downsample2d,
    modulated_conv2d,
    setup_filter,
    upsample2d,
)
from stylegan2_ada.ops.bias_act import ACTIVATIONS

DEFAULT_RESAMPLE_FILTER = (1, 3, 3, 1)
# Activations with act(g * x) == g * act(x) for g > 0: their gain can be folded into weights and bias.
_HOMOGENEOUS_ACTIVATIONS = ("linear", "relu", "lrelu")


def _activate_and_clamp(x: torch.Tensor, activation: str, clamp: float | None) -> torch.Tensor:
    """Apply a positively homogeneous activation without gain, then clamp to [-clamp, clamp].

    ``x`` must be a temporary of the caller: without autograd it is overwritten (no new activation-sized
    buffer, which on CPU costs more than the arithmetic)."""
    in_place = not torch.is_grad_enabled()
    if activation == "lrelu":
        slope = ACTIVATIONS["lrelu"].def_alpha
        x = (
            torch.nn.functional.leaky_relu_(x, slope)
            if in_place
            else torch.nn.functional.leaky_relu(x, slope)
        )
    elif activation == "relu":
        x = torch.relu_(x) if in_place else torch.relu(x)
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-clamp, clamp) if in_place else x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit mean square along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def _activation_memory_format(
    fp16_channels_last: bool, fp16: bool, device: torch.device
) -> torch.memory_format:
    """NHWC (channels_last) where it is faster: on CPU for inference (oneDNN's transposed convolution runs
    several times faster on NHWC; measured 7 % faster generation overall, but 15 % slower training steps,
    so not when gradients are recorded), and on CUDA for float16 blocks when asked."""
    if (device.type == "cpu" and not torch.is_grad_enabled()) or (fp16_channels_last and fp16):
        return torch.channels_last
    return torch.contiguous_format


def _to_activation(x: torch.Tensor, dtype: torch.dtype, memory_format: torch.memory_format) -> torch.Tensor:
    """Cast to ``dtype`` and lay out as ``memory_format``. Layout changes speed only, never values, so
    where it cannot be set (per-example tensors inside ``torch.func`` transforms such as ``vmap`` are not
    plain 4-D tensors) it is left as it is."""
    x = x.to(dtype=dtype)
    if memory_format == torch.contiguous_format:
        return x
    try:
        return x.contiguous(memory_format=memory_format)  # no copy when already laid out so
    except RuntimeError:  # under vmap: "required rank 4 tensor to use channels_last format" and kin
        return x


def _use_fp16(enabled: bool, force_fp32: bool, device: torch.device) -> bool:
    """float16 only where requested, not forced off, and on CUDA (CPU kernels for half are slow or missing)."""
    return enabled and not force_fp32 and device.type == "cuda"


# ----------------------------------------------------------------------------------------------------
# Basic layers


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate: weight stored as randn/lr_mul, used as weight*lr_mul/sqrt(in)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)  # [O, I]
        self.bias = (
            nn.Parameter(torch.full([out_features], float(np.float32(bias_init)))) if bias else None
        )  # [O]
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, I] -> [N, O]."""
        w = self.weight.to(x.dtype)
        gain = ACTIVATIONS[self.activation].def_gain if self.activation in _HOMOGENEOUS_ACTIVATIONS else 1.0
        if self.bias is None:
            return bias_act(x.matmul(w.t()) * self.weight_gain, None, act=self.activation)
        if torch.is_grad_enabled() and self.weight.requires_grad:
            # Training: scaled weight and bias as plain tensors, so that gradient tools that trace how a
            # parameter meets data (e.g. per-example gradients) see an ordinary addmm / bias add.
            b = self.bias.to(x.dtype) * self.bias_gain
            if self.activation == "linear":
                return torch.addmm(b.unsqueeze(0), x, (w * self.weight_gain).t())
            return bias_act(x.matmul((w * self.weight_gain).t()), b, act=self.activation)
        if self.activation in _HOMOGENEOUS_ACTIVATIONS:
            # act(g * (a * x W^T + b * bias)) == act(g*a * x W^T + g*b * bias): the equalised-learning-rate
            # scales and the activation gain ride in addmm's alpha and beta (no scaled weight copy).
            x = torch.addmm(
                self.bias.to(x.dtype),
                x,
                w.t(),
                beta=self.bias_gain * gain,
                alpha=self.weight_gain * gain,
            )
            return _activate_and_clamp(x, self.activation, None)
        x = torch.addmm(self.bias.to(x.dtype), x, w.t(), beta=self.bias_gain, alpha=self.weight_gain)
        return bias_act(x, None, act=self.activation)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"
        )


class Conv2dLayer(nn.Module):
    """Convolution with equalised learning rate, optional FIR up/down-sampling, bias, activation and clamp.

    ``trainable=False`` (Freeze-D) stores weight and bias as buffers under the same names.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,
        conv_clamp: float | None = None,
        channels_last: bool = False,
        trainable: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.channels_last = channels_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATIONS[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(
            memory_format=memory_format
        )
        bias_t = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_t) if bias_t is not None else None
        else:
            self.register_buffer("weight", weight)
            if bias_t is not None:
                self.register_buffer("bias", bias_t)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """[N, C_in, H, W] -> [N, C_out, H*up/down, W*up/down]."""
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        if self.activation in _HOMOGENEOUS_ACTIVATIONS:
            # act(g * (conv(x, w) + b)) == act(conv(x, g * w) + g * b): one pass less over the activations.
            w = self.weight * (self.weight_gain * act_gain)
            b = self.bias * act_gain if self.bias is not None else None
            x = conv2d_resample(
                x,
                w.to(x.dtype),
                f=self.resample_filter,
                up=self.up,
                down=self.down,
                padding=self.padding,
                flip_weight=(self.up == 1),
                bias=b.to(x.dtype) if b is not None else None,
            )
            return _activate_and_clamp(x, self.activation, act_clamp)
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(
            x,
            w.to(x.dtype),
            f=self.resample_filter,
            up=self.up,
            down=self.down,
            padding=self.padding,
            flip_weight=(self.up == 1),
        )
        return bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, out={self.out_channels}, act={self.activation}, up={self.up}, "
            f"down={self.down}"
        )


class MappingNetwork(nn.Module):
    """z [N, Z] and c [N, c_dim] -> w [N, Wd], broadcast to [N, L, Wd] when ``num_ws`` is set.

    Tracks the moving average ``w_avg`` [Wd] in training (used for truncation).
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            layer = FullyConnectedLayer(
                features[i], features[i + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{i}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        skip_w_avg_update: bool = False,
    ) -> torch.Tensor:
        """Returns ws [N, L, Wd] (or [N, Wd] when num_ws is None)."""
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))  # [N, Z]
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))  # [N, E]
            x = torch.cat([x, y], dim=1) if x is not None else y  # [N, Z+E]
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)  # [N, Wd]

        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, L, Wd]

        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("truncation needs w_avg, which this mapping network does not track")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x


# ----------------------------------------------------------------------------------------------------
# Synthesis network


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling x2), noise, bias, lrelu, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].def_gain

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "random",
        fused_modconv: bool = False,
        gain: float = 1.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [N, C_in, H, W], w [N, Wd] -> [N, C_out, H*up, W*up].

        ``noise`` [N, 1, H*up, W*up] (unit variance; ``noise_mode='random'`` only) is used instead of
        drawing fresh noise from torch's global generator.
        """
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none'; got {noise_mode!r}")
        if noise is not None and noise_mode != "random":
            raise ValueError(f"a noise input is used with noise_mode 'random' only; got {noise_mode!r}")
        styles = self.affine(w)  # [N, C_in]

        added_noise = None
        if self.use_noise and noise_mode == "random":
            if noise is None:
                noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            added_noise = noise * self.noise_strength  # [N, 1, H', W']
        elif self.use_noise and noise_mode == "const":
            added_noise = self.noise_const * self.noise_strength  # [H', W']

        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        if self.activation in _HOMOGENEOUS_ACTIVATIONS:
            # Bias, noise and gain ride along with demodulation in one pass; then activation and clamp.
            x = modulated_conv2d(
                x,
                self.weight,
                styles,
                noise=added_noise,
                up=self.up,
                padding=self.padding,
                resample_filter=self.resample_filter,
                flip_weight=(self.up == 1),
                fused_modconv=fused_modconv,
                bias=self.bias,
                gain=act_gain,
            )
            return _activate_and_clamp(x, self.activation, act_clamp)
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=added_noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=(self.up == 1),
            fused_modconv=fused_modconv,
        )
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=act_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation; linear, clamped."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = False) -> torch.Tensor:
        """x [N, C, H, W], w [N, Wd] -> [N, img_channels, H, W]."""
        styles = self.affine(w) * self.weight_gain  # [N, C]
        x = modulated_conv2d(
            x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv, bias=self.bias
        )
        return _activate_and_clamp(x, "linear", self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (const | upsampling conv0) + conv1 + torgb."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        **layer_kwargs: Any,
    ):
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet'; got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim=w_dim,
                resolution=resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                channels_last=self.channels_last,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels,
            out_channels,
            w_dim=w_dim,
            resolution=resolution,
            conv_clamp=conv_clamp,
            channels_last=self.channels_last,
            **layer_kwargs,
        )
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(
                out_channels,
                img_channels,
                w_dim=w_dim,
                conv_clamp=conv_clamp,
                channels_last=self.channels_last,
            )
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                up=2,
                resample_filter=resample_filter,
                channels_last=self.channels_last,
            )

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        noise: Sequence[torch.Tensor] | None = None,
        **layer_kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [N, C_in, R/2, R/2] (None for the 4x4 block), img [N, img_C, R/2, R/2] or None,
        ws [N, num_conv + num_torgb, Wd] -> (x [N, C_out, R, R], img [N, img_C, R, R] or None).

        ``noise``: ``num_conv`` tensors [N, 1, R, R] for the convolution layers in order (see
        :meth:`SynthesisLayer.forward`), or ``None``."""
        w_iter = iter(ws.unbind(dim=1))
        noise_iter = iter(noise) if noise is not None else itertools.repeat(None)
        fp16 = _use_fp16(self.use_fp16, force_fp32, ws.device)
        dtype = torch.float16 if fp16 else torch.float32
        memory_format = _activation_memory_format(self.channels_last, fp16, ws.device)
        if fused_modconv is None:
            # Per-sample grouped kernels pay off only for inference on CUDA; the shared-weight form batches
            # better everywhere else (and supports float16 activations without per-sample weights).
            fused_modconv = (
                (not self.training)
                and ws.device.type == "cuda"
                and (dtype == torch.float32 or ws.shape[0] == 1)
            )

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])  # [N, C, 4, 4]
            x = _to_activation(x, dtype, memory_format)
        else:
            x = _to_activation(x, dtype, memory_format)

        layer_kwargs["fused_modconv"] = fused_modconv
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), noise=next(noise_iter), **layer_kwargs)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), noise=next(noise_iter), **layer_kwargs)
            x = self.conv1(x, next(w_iter), noise=next(noise_iter), gain=math.sqrt(0.5), **layer_kwargs)
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), noise=next(noise_iter), **layer_kwargs)
            x = self.conv1(x, next(w_iter), noise=next(noise_iter), **layer_kwargs)

        if img is not None:
            img = upsample2d(img, self.resample_filter)  # [N, img_C, R, R]
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img + y if img is not None else y
        return x, img


def _channels_at(channel_base: int, channel_max: int, res: int) -> int:
    return min(channel_base // res, channel_max)


def _check_resolution(img_resolution: int) -> int:
    log2 = int(np.log2(img_resolution)) if img_resolution > 0 else 0
    if img_resolution < 4 or 2**log2 != img_resolution:
        raise ValueError(f"img_resolution must be a power of two >= 4; got {img_resolution}")
    return log2


class SynthesisNetwork(nn.Module):
    """ws [N, L, Wd] -> images [N, img_channels, R, R]."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        **block_kwargs: Any,
    ):
        super().__init__()
        log2 = _check_resolution(img_resolution)
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = log2
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {res: _channels_at(channel_base, channel_max, res) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            is_last = res == img_resolution
            block = SynthesisBlock(
                in_channels,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=is_last,
                use_fp16=(res >= fp16_resolution),
                **block_kwargs,
            )
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def noise_resolutions(self) -> list[int]:
        """The size R of each convolution layer's noise input [N, 1, R, R], in the order ``forward``
        takes them (``noise`` argument): b4.conv1, b8.conv0, b8.conv1, b16.conv0, ..."""
        return [res for res in self.block_resolutions for _ in range(getattr(self, f"b{res}").num_conv)]

    def forward(
        self, ws: torch.Tensor, noise: Sequence[torch.Tensor] | None = None, **block_kwargs: Any
    ) -> torch.Tensor:
        """ws [N, L, Wd] -> images [N, img_channels, R, R].

        ``noise``: with ``noise_mode='random'``, the noise inputs to use instead of drawing them from
        torch's global generator: one [N, 1, R_i, R_i] unit-variance tensor per convolution layer, sizes
        and order as :meth:`noise_resolutions`. Lets a caller give each sample its own reproducible
        noise whatever the batch it is in. Other keywords (``noise_mode``, ``force_fp32``,
        ``fused_modconv``) go to every block.
        """
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}]; got {tuple(ws.shape)}")
        if noise is not None:
            want = self.noise_resolutions()
            got = [tuple(t.shape) for t in noise]
            if got != [(ws.shape[0], 1, r, r) for r in want]:
                raise ValueError(f"noise must be {len(want)} tensors [N, 1, R, R] with R = {want}; got {got}")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        n_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            # Each block's torgb shares its w with the next block's conv0: advance by num_conv only.
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            block_noise = noise[n_idx : n_idx + block.num_conv] if noise is not None else None
            w_idx += block.num_conv
            n_idx += block.num_conv
            x, img = block(x, img, block_ws, noise=block_noise, **block_kwargs)
        return img


class Generator(nn.Module):
    """z [N, Z], c [N, c_dim] -> images [N, img_channels, R, R] in about [-1, 1]."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
    ):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = copy.deepcopy(
            dict(
                z_dim=z_dim,
                c_dim=c_dim,
                w_dim=w_dim,
                img_resolution=img_resolution,
                img_channels=img_channels,
                mapping_kwargs=mapping_kwargs,
                synthesis_kwargs=synthesis_kwargs,
            )
        )
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs
        )

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        **synthesis_kwargs: Any,
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)


# ----------------------------------------------------------------------------------------------------
# Discriminator


class DiscriminatorBlock(nn.Module):
    """One resolution of the discriminator: [fromrgb] + conv0 + downsampling conv1 (+ resnet skip)."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        first_layer_idx: int,
        architecture: str = "resnet",
        activation: str = "lrelu",
        resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        freeze_layers: int = 0,
    ):
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet'; got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))

        # Freeze-D counts layers from the input: fromrgb, conv0, conv1, skip in each block.
        self.num_layers = 0

        def next_trainable() -> bool:
            trainable = first_layer_idx + self.num_layers >= freeze_layers
            self.num_layers += 1
            return trainable

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(
                img_channels, tmp_channels, kernel_size=1, trainable=next_trainable(), **common
            )
        self.conv0 = Conv2dLayer(
            tmp_channels, tmp_channels, kernel_size=3, trainable=next_trainable(), **common
        )
        self.conv1 = Conv2dLayer(
            tmp_channels,
            out_channels,
            kernel_size=3,
            down=2,
            trainable=next_trainable(),
            resample_filter=resample_filter,
            **common,
        )
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                down=2,
                trainable=next_trainable(),
                resample_filter=resample_filter,
                channels_last=self.channels_last,
            )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [N, C_in, R, R] (None for the first block), img [N, img_C, R, R] ->
        (x [N, C_out, R/2, R/2], img downsampled for 'skip' else None)."""
        device = (x if x is not None else img).device
        fp16 = _use_fp16(self.use_fp16, force_fp32, device)
        dtype = torch.float16 if fp16 else torch.float32
        memory_format = _activation_memory_format(self.channels_last, fp16, device)

        if x is not None:
            x = _to_activation(x, dtype, memory_format)
        if self.in_channels == 0 or self.architecture == "skip":
            img = _to_activation(img, dtype, memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None

        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img


class MinibatchStdLayer(nn.Module):
    """Append the standard deviation across groups of samples as extra feature maps.

    Samples n and n + k*(N/G) form a group (G = min(group_size, N); N must be divisible by G).
    """

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, C + num_channels, H, W]."""
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g != 0:
            raise ValueError(f"minibatch-std: batch {n} is not divisible by the group size {g}")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, N/G, F, C/F, H, W]
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()  # [N/G, F, C/F, H, W]
        y = y.mean(dim=[2, 3, 4])  # [N/G, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: [fromrgb] + minibatch-std + conv + fc + out (+ projection onto the class embedding)."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = (
            MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        )
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels,
            in_channels,
            kernel_size=3,
            activation=activation,
            conv_clamp=conv_clamp,
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(
        self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None, force_fp32: bool = False
    ) -> torch.Tensor:
        """x [N, C, 4, 4], cmap [N, cmap_dim] or None -> logits [N, 1]."""
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)  # [N, cmap_dim] or [N, 1]
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """images [N, img_channels, R, R], c [N, c_dim] -> logits [N, 1] (projection discriminator when c_dim > 0)."""

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,
        block_kwargs: dict | None = None,
        mapping_kwargs: dict | None = None,
        epilogue_kwargs: dict | None = None,
    ):
        super().__init__()
        block_kwargs = dict(block_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        epilogue_kwargs = dict(epilogue_kwargs or {})
        self.init_kwargs = copy.deepcopy(
            dict(
                c_dim=c_dim,
                img_resolution=img_resolution,
                img_channels=img_channels,
                architecture=architecture,
                channel_base=channel_base,
                channel_max=channel_max,
                num_fp16_res=num_fp16_res,
                conv_clamp=conv_clamp,
                cmap_dim=cmap_dim,
                block_kwargs=block_kwargs,
                mapping_kwargs=mapping_kwargs,
                epilogue_kwargs=epilogue_kwargs,
            )
        )
        log2 = _check_resolution(img_resolution)
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = log2
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = {res: _channels_at(channel_base, channel_max, res) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(
                in_channels,
                channels[res],
                channels[res // 2],
                resolution=res,
                first_layer_idx=layer_idx,
                use_fp16=(res >= fp16_resolution),
                **block_kwargs,
                **common,
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **mapping_kwargs
            )
        self.b4 = DiscriminatorEpilogue(
            channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common
        )

    def forward(self, img: torch.Tensor, c: torch.Tensor | None, **block_kwargs: Any) -> torch.Tensor:
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(
                f"D expects images [N, {self.img_channels}, {self.img_resolution}, "
                f"{self.img_resolution}]; got {tuple(img.shape)}"
            )
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None  # [N, cmap_dim]
        return self.b4(x, img, cmap)
