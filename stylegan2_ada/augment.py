"""Adaptive discriminator augmentation (ADA): the augmentation pipeline and the p controller.

The pipeline follows "Training Generative Adversarial Networks with Limited Data" (Karras et al.,
NeurIPS 2020, appendix B) and is state-dict compatible with the public stylegan2-ada-pytorch
``AugmentPipe`` (buffers ``p`` [], ``Hz_geom`` [12], ``Hz_fbank`` [4, 43]; same constructor
keywords and default strengths). It is a clean-room, pure-PyTorch implementation:

* Every op fires independently per sample with probability ``multiplier * p`` (the rotations
  twice, before and after anisotropic scaling, each with ``1 - sqrt(1 - rotate * p)``).
* Stages, in order: pixel blitting (x-flip, 90° rotations, integer translation; done exactly on the
  pixel grid with mirrored borders), general geometry (isotropic scale, rotation, anisotropic
  scale, fractional translation; one composed inverse matrix, resampled with sym6 anti-aliasing),
  colour (brightness, contrast, luma flip, hue, saturation as one 4x4 matrix; for 1-channel images
  the matrix is reduced to its mean over the colour rows, and hue/saturation are skipped),
  filter-bank amplification, additive Gaussian noise, cutout.
* Samples that no op of a stage touched skip that stage and pass through bit-exactly, so ``p = 0``
  is an exact identity (and low p is cheap).
* Differentiable with respect to the images, twice (R1 on augmented reals).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from stylegan2_ada import augment_ops as ops

# Multipliers of the named pipelines (train.py --augpipe). Every enabled op gets multiplier 1.
_BLIT = {"xflip": 1.0, "rotate90": 1.0, "xint": 1.0}
_GEOM = {"scale": 1.0, "rotate": 1.0, "aniso": 1.0, "xfrac": 1.0}
_COLOR = {"brightness": 1.0, "contrast": 1.0, "lumaflip": 1.0, "hue": 1.0, "saturation": 1.0}
_FILTER = {"imgfilter": 1.0}
_NOISE = {"noise": 1.0}
_CUTOUT = {"cutout": 1.0}

AUGPIPE_SPECS: dict[str, dict[str, float]] = {
    "blit": dict(_BLIT),
    "geom": dict(_GEOM),
    "color": dict(_COLOR),
    "filter": dict(_FILTER),
    "noise": dict(_NOISE),
    "cutout": dict(_CUTOUT),
    "bg": {**_BLIT, **_GEOM},
    "bgc": {**_BLIT, **_GEOM, **_COLOR},
    "bgcf": {**_BLIT, **_GEOM, **_COLOR, **_FILTER},
    "bgcfn": {**_BLIT, **_GEOM, **_COLOR, **_FILTER, **_NOISE},
    "bgcfnc": {**_BLIT, **_GEOM, **_COLOR, **_FILTER, **_NOISE, **_CUTOUT},
}

DEFAULT_ADA_KIMG = 500  # images (thousands) for p to move by 1 when training from scratch
RESUME_ADA_KIMG = 100  # ... when resuming / transfer learning (upstream's --resume setting)
DEFAULT_ADA_TARGET = 0.6  # target of the overfitting heuristic E[sign(D(real))] (upstream's --target)


class _Draw:
    """Per-call random source: uniform/normal draws on the images' device from one generator."""

    def __init__(self, device: torch.device, dtype: torch.dtype, generator: torch.Generator | None):
        self.device, self.dtype, self.generator = device, dtype, generator

    def uniform(self, *shape: int) -> Tensor:
        return torch.rand(shape, device=self.device, dtype=self.dtype, generator=self.generator)

    def normal(self, *shape: int) -> Tensor:
        return torch.randn(shape, device=self.device, dtype=self.dtype, generator=self.generator)

    def chance(self, n: int, prob: Tensor | float) -> Tensor:
        """[N] bool: each sample independently True with probability ``prob``."""
        return self.uniform(n) < prob


@dataclass
class _Plan:
    """Random parameters for one batch. ``*_on`` are [N] bool masks of samples a stage changes."""

    blit_inv: Tensor | None = None  # [N, 3, 3]
    blit_on: Tensor | None = None
    geom_inv: Tensor | None = None  # [N, 3, 3]
    geom_on: Tensor | None = None
    color: Tensor | None = None  # [N, 4, 4]
    color_on: Tensor | None = None
    fbank_gain: Tensor | None = None  # [N, bands]
    fbank_on: Tensor | None = None
    noise_sigma: Tensor | None = None  # [N]
    cutout_size: Tensor | None = None  # [N]
    cutout_centre: Tensor | None = None  # [N, 2] (x, y) in [0, 1)


class AugmentPipe(nn.Module):
    """Stochastic, differentiable image augmentation with an overall strength ``p``.

    Multipliers (``xflip`` ... ``cutout``) scale ``p`` into each op's per-sample probability;
    0 disables the op. Strength parameters (``*_std``, ``*_max``, ``cutout_size``) use upstream's
    defaults. Buffers: ``p`` [] (overall probability, initialised to 1 like upstream; the training
    loop sets it with ``pipe.p.copy_(value)``), ``Hz_geom`` [12], ``Hz_fbank`` [4, 43].
    """

    def __init__(
        self,
        xflip: float = 0,
        rotate90: float = 0,
        xint: float = 0,
        xint_max: float = 0.125,
        scale: float = 0,
        rotate: float = 0,
        aniso: float = 0,
        xfrac: float = 0,
        scale_std: float = 0.2,
        rotate_max: float = 1,
        aniso_std: float = 0.2,
        xfrac_std: float = 0.125,
        brightness: float = 0,
        contrast: float = 0,
        lumaflip: float = 0,
        hue: float = 0,
        saturation: float = 0,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        hue_max: float = 1,
        saturation_std: float = 1,
        imgfilter: float = 0,
        imgfilter_bands: list[float] | tuple[float, ...] = (1, 1, 1, 1),
        imgfilter_std: float = 1,
        noise: float = 0,
        cutout: float = 0,
        noise_std: float = 0.1,
        cutout_size: float = 0.5,
    ) -> None:
        kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.init_kwargs: dict[str, Any] = {
            k: ([float(b) for b in v] if k == "imgfilter_bands" else float(v)) for k, v in kwargs.items()
        }
        for name, value in self.init_kwargs.items():
            setattr(self, name, value)
        if len(self.imgfilter_bands) != len(ops.FBANK_EXPECTED_POWER):
            raise ValueError(
                f"imgfilter_bands must have {len(ops.FBANK_EXPECTED_POWER)} entries, got {self.imgfilter_bands}"
            )
        for name in (
            "xflip",
            "rotate90",
            "xint",
            "scale",
            "rotate",
            "aniso",
            "xfrac",
            "brightness",
            "contrast",
            "lumaflip",
            "hue",
            "saturation",
            "imgfilter",
            "noise",
            "cutout",
        ):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"AugmentPipe: probability multiplier {name} must be >= 0, got {getattr(self, name)}"
                )

        self.register_buffer("p", torch.ones([]))  # overall augmentation probability
        self.register_buffer("Hz_geom", ops.geom_lowpass_filter())  # [12]
        self.register_buffer(
            "Hz_fbank", ops.filter_bank(ops.SYM2_DEC_LO, len(self.imgfilter_bands))
        )  # [4, 43]

    def extra_repr(self) -> str:
        on = [k for k in AUGPIPE_SPECS["bgcfnc"] if getattr(self, k) > 0]
        return f"p={float(self.p):.4f}, ops={on}"

    # ------------------------------------------------------------------------------------------
    # Parameter sampling

    def _plan_blit(self, rng: _Draw, plan: _Plan, n: int, h: int, w: int) -> None:
        if not (self.xflip > 0 or self.rotate90 > 0 or self.xint > 0):
            return
        inv = torch.eye(3, device=rng.device, dtype=rng.dtype).repeat(n, 1, 1)
        on = torch.zeros(n, dtype=torch.bool, device=rng.device)
        if self.xflip > 0:
            flip = torch.floor(rng.uniform(n) * 2)  # 0 or 1
            hit = rng.chance(n, self.xflip * self.p)
            flip = torch.where(hit, flip, torch.zeros_like(flip))
            inv = inv @ ops.scale2d(1 - 2 * flip, torch.ones_like(flip))
            on |= hit
        if self.rotate90 > 0:
            quarter = torch.floor(rng.uniform(n) * 4)  # 0..3 quarter turns
            hit = rng.chance(n, self.rotate90 * self.p)
            quarter = torch.where(hit, quarter, torch.zeros_like(quarter))
            inv = inv @ ops.rotate2d(quarter * (math.pi / 2))
            # cos/sin of multiples of pi/2 are only approximately 0/±1 in floating point.
            inv[:, :2, :2] = torch.round(inv[:, :2, :2])
            on |= hit
        if self.xint > 0:
            shift = (rng.uniform(n, 2) * 2 - 1) * self.xint_max  # fraction of the image size
            hit = rng.chance(n, self.xint * self.p)
            shift = torch.where(hit[:, None], shift, torch.zeros_like(shift))
            inv = inv @ ops.translate2d(-torch.round(shift[:, 0] * w), -torch.round(shift[:, 1] * h))
            on |= hit
        plan.blit_inv, plan.blit_on = inv, on

    def _plan_geom(self, rng: _Draw, plan: _Plan, n: int, h: int, w: int) -> None:
        if not (self.scale > 0 or self.rotate > 0 or self.aniso > 0 or self.xfrac > 0):
            return
        inv = torch.eye(3, device=rng.device, dtype=rng.dtype).repeat(n, 1, 1)
        on = torch.zeros(n, dtype=torch.bool, device=rng.device)
        ones = torch.ones(n, device=rng.device, dtype=rng.dtype)
        # Probability of each of the two rotations so that at least one fires with rotate * p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(0, 1))

        def rotation() -> Tensor:
            nonlocal on
            theta = (rng.uniform(n) * 2 - 1) * (math.pi * self.rotate_max)
            hit = rng.chance(n, p_rot)
            on |= hit
            return ops.rotate2d(torch.where(hit, theta, torch.zeros_like(theta)))

        if self.scale > 0:
            s = torch.exp2(rng.normal(n) * self.scale_std)
            hit = rng.chance(n, self.scale * self.p)
            s = torch.where(hit, s, ones)
            inv = inv @ ops.scale2d(1 / s, 1 / s)
            on |= hit
        if self.rotate > 0:
            inv = inv @ rotation()  # before anisotropic scaling
        if self.aniso > 0:
            s = torch.exp2(rng.normal(n) * self.aniso_std)
            hit = rng.chance(n, self.aniso * self.p)
            s = torch.where(hit, s, ones)
            inv = inv @ ops.scale2d(1 / s, s)
            on |= hit
        if self.rotate > 0:
            inv = inv @ rotation()  # after anisotropic scaling
        if self.xfrac > 0:
            shift = rng.normal(n, 2) * self.xfrac_std  # fraction of the image size
            hit = rng.chance(n, self.xfrac * self.p)
            shift = torch.where(hit[:, None], shift, torch.zeros_like(shift))
            inv = inv @ ops.translate2d(-shift[:, 0] * w, -shift[:, 1] * h)
            on |= hit
        plan.geom_inv, plan.geom_on = inv, on

    def _plan_color(self, rng: _Draw, plan: _Plan, n: int, channels: int) -> None:
        colourful = channels > 1  # hue and saturation need chroma
        if not (
            self.brightness > 0
            or self.contrast > 0
            or self.lumaflip > 0
            or (colourful and (self.hue > 0 or self.saturation > 0))
        ):
            return
        if channels not in (1, 3):
            raise ValueError(f"AugmentPipe colour ops need 1 or 3 image channels, got {channels}")
        mat = torch.eye(4, device=rng.device, dtype=rng.dtype).repeat(n, 1, 1)
        on = torch.zeros(n, dtype=torch.bool, device=rng.device)
        zeros = torch.zeros(n, device=rng.device, dtype=rng.dtype)
        ones = torch.ones(n, device=rng.device, dtype=rng.dtype)
        if self.brightness > 0:
            b = rng.normal(n) * self.brightness_std
            hit = rng.chance(n, self.brightness * self.p)
            mat = ops.translate_rgb(torch.where(hit, b, zeros)) @ mat
            on |= hit
        if self.contrast > 0:
            c = torch.exp2(rng.normal(n) * self.contrast_std)
            hit = rng.chance(n, self.contrast * self.p)
            mat = ops.scale_rgb(torch.where(hit, c, ones)) @ mat
            on |= hit
        if self.lumaflip > 0:
            flip = torch.floor(rng.uniform(n) * 2)
            hit = rng.chance(n, self.lumaflip * self.p)
            mat = ops.reflect_luma(torch.where(hit, flip, zeros)) @ mat
            on |= hit
        if colourful and self.hue > 0:
            theta = (rng.uniform(n) * 2 - 1) * (math.pi * self.hue_max)
            hit = rng.chance(n, self.hue * self.p)
            mat = ops.rotate_about_luma(torch.where(hit, theta, zeros)) @ mat
            on |= hit
        if colourful and self.saturation > 0:
            s = torch.exp2(rng.normal(n) * self.saturation_std)
            hit = rng.chance(n, self.saturation * self.p)
            mat = ops.scale_chroma(torch.where(hit, s, ones)) @ mat
            on |= hit
        plan.color, plan.color_on = mat, on

    def _plan_filter(self, rng: _Draw, plan: _Plan, n: int) -> None:
        if not self.imgfilter > 0:
            return
        bands = len(self.imgfilter_bands)
        power = torch.tensor(ops.FBANK_EXPECTED_POWER, device=rng.device, dtype=rng.dtype)  # [bands]
        gain = torch.ones(n, bands, device=rng.device, dtype=rng.dtype)
        on = torch.zeros(n, dtype=torch.bool, device=rng.device)
        for band, strength in enumerate(self.imgfilter_bands):
            amp = torch.exp2(rng.normal(n) * (self.imgfilter_std * strength))
            hit = rng.chance(n, self.imgfilter * self.p * strength)
            step = torch.ones(n, bands, device=rng.device, dtype=rng.dtype)
            step[:, band] = torch.where(hit, amp, torch.ones_like(amp))
            # Renormalise so the expected total power of a 1/f image is unchanged.
            step = step / (power * step.square()).sum(dim=1, keepdim=True).sqrt()
            gain = gain * step
            on |= hit
        plan.fbank_gain, plan.fbank_on = gain, on

    def _plan(self, images: Tensor, generator: torch.Generator | None) -> _Plan:
        n, c, h, w = images.shape
        dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
        rng = _Draw(images.device, dtype, generator)
        plan = _Plan()
        self._plan_blit(rng, plan, n, h, w)
        self._plan_geom(rng, plan, n, h, w)
        self._plan_color(rng, plan, n, c)
        self._plan_filter(rng, plan, n)
        if self.noise > 0:
            sigma = rng.normal(n).abs() * self.noise_std
            hit = rng.chance(n, self.noise * self.p)
            plan.noise_sigma = torch.where(hit, sigma, torch.zeros_like(sigma))
        if self.cutout > 0:
            hit = rng.chance(n, self.cutout * self.p)
            plan.cutout_size = torch.where(hit, self.cutout_size, 0.0).to(dtype)
            plan.cutout_centre = rng.uniform(n, 2)
        return plan

    # ------------------------------------------------------------------------------------------
    # Application

    @staticmethod
    def _on_subset(x: Tensor, selected: list[bool], fn: Callable[[Tensor, Tensor | None], Tensor]) -> Tensor:
        """Apply ``fn(x_subset, index)`` to the selected samples only; the others pass through untouched.

        ``index`` is the [K] int64 tensor of selected positions (for picking per-sample parameters),
        or None when every sample is selected. [N, C, H, W] -> [N, C, H, W].
        """
        if not any(selected):
            return x
        if all(selected):
            return fn(x, None)
        index = torch.tensor([i for i, s in enumerate(selected) if s], device=x.device)
        return x.index_copy(0, index, fn(x.index_select(0, index), index))

    def _apply_color(self, images: Tensor, mat: Tensor) -> Tensor:
        n, c, h, w = images.shape
        mat = mat.to(images.dtype)
        flat = images.reshape(n, c, h * w)
        if c == 3:
            out = mat[:, :3, :3] @ flat + mat[:, :3, 3:]
        else:  # 1 channel: the average colour row acting on a grey pixel (r = g = b)
            row = mat[:, :3, :].mean(dim=1)  # [N, 4]
            out = flat * row[:, :3].sum(dim=1)[:, None, None] + row[:, 3, None, None]
        return out.reshape(n, c, h, w)

    def _apply_cutout(self, images: Tensor, size: Tensor, centre: Tensor) -> Tensor:
        n, c, h, w = images.shape
        u = (torch.arange(w, device=images.device, dtype=size.dtype) + 0.5) / w  # [W]
        v = (torch.arange(h, device=images.device, dtype=size.dtype) + 0.5) / h  # [H]
        outside_x = (u[None, :] - centre[:, 0:1]).abs() >= size[:, None] / 2  # [N, W]
        outside_y = (v[None, :] - centre[:, 1:2]).abs() >= size[:, None] / 2  # [N, H]
        keep = outside_x[:, None, None, :] | outside_y[:, None, :, None]  # [N, 1, H, W]
        return images * keep.to(images.dtype)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch.

        Args:
            images: [N, C, H, W] floating point (any range; typically [-1, 1]). The input is
                never modified in place.
            generator: optional ``torch.Generator`` on ``images.device`` for reproducible draws;
                default is torch's global generator for that device.
        Returns:
            [N, C, H, W], same dtype and device; differentiable (twice) with respect to ``images``.
        """
        if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
            raise ValueError(
                f"AugmentPipe expects a floating point [N, C, H, W] tensor, got "
                f"{getattr(images, 'shape', type(images))} {getattr(images, 'dtype', '')}"
            )
        n, c, h, w = images.shape
        plan = self._plan(images, generator)

        # One host sync: which samples each stage changes (the others skip the work entirely).
        masks = [
            plan.blit_on,
            plan.geom_on,
            plan.color_on,
            plan.fbank_on,
            None if plan.noise_sigma is None else plan.noise_sigma > 0,
            None if plan.cutout_size is None else plan.cutout_size > 0,
        ]
        present = [m for m in masks if m is not None]
        host = iter(torch.stack(present).cpu().tolist() if present else [])
        blit_on, geom_on, color_on, fbank_on, noise_on, cutout_on = (
            [False] * n if m is None else next(host) for m in masks
        )

        def pick(t: Tensor, index: Tensor | None) -> Tensor:
            return t if index is None else t.index_select(0, index)

        x = images
        x = self._on_subset(x, blit_on, lambda xs, i: ops.blit(xs, pick(plan.blit_inv, i)))
        x = self._on_subset(x, geom_on, lambda xs, i: ops.resample(xs, pick(plan.geom_inv, i), self.Hz_geom))
        x = self._on_subset(x, color_on, lambda xs, i: self._apply_color(xs, pick(plan.color, i)))
        if any(fbank_on):
            kernels = plan.fbank_gain @ self.Hz_fbank.to(plan.fbank_gain.dtype)  # [N, 43]
            x = self._on_subset(x, fbank_on, lambda xs, i: ops.fir_filter(xs, pick(kernels, i)))
        if any(noise_on):
            noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
            x = x + noise * plan.noise_sigma.to(x.dtype)[:, None, None, None]
        if any(cutout_on):
            x = self._apply_cutout(x, plan.cutout_size, plan.cutout_centre)
        return x


def make_augment_pipe(spec: str, p: float = 0.0, **overrides: float) -> AugmentPipe:
    """Build an :class:`AugmentPipe` for a named pipeline (``AUGPIPE_SPECS``) with probability ``p``.

    ``overrides`` replace any constructor keyword (strengths or multipliers).
    """
    if spec not in AUGPIPE_SPECS:
        raise ValueError(f"unknown augment pipeline {spec!r}; choose from {sorted(AUGPIPE_SPECS)}")
    pipe = AugmentPipe(**{**AUGPIPE_SPECS[spec], **overrides})
    pipe.p.fill_(float(p))
    return pipe


class AdaController:
    """Adaptive p: nudge the augmentation probability towards a target overfitting heuristic.

    The heuristic is r_t = E[sign(D(real))] over the last ``interval`` minibatches. Each update
    moves p by ``sign(r_t - target) * batch_size * interval / (kimg * 1000)``, so p can traverse
    [0, 1] in ``kimg`` thousand images; p is clamped to [0, 1] (upstream clamps at 0 only).

    The training loop owns the cadence: it calls :meth:`update` every ``interval`` steps with the mean
    sign of D's real logits since the last update (summed over ranks).
    """

    def __init__(
        self, target: float = DEFAULT_ADA_TARGET, interval: int = 4, kimg: float = DEFAULT_ADA_KIMG
    ) -> None:
        if not -1.0 <= target <= 1.0:
            raise ValueError(f"ADA target must be in [-1, 1], got {target}")
        if interval < 1:
            raise ValueError(f"ADA interval must be >= 1 minibatch, got {interval}")
        if kimg <= 0:
            raise ValueError(f"ADA kimg must be > 0, got {kimg}")
        self.target = float(target)
        self.interval = int(interval)
        self.kimg = float(kimg)
        self.num_updates = 0
        self.last_signs: float | None = None

    def adjustment(self, sign_real_mean: float, batch_size: int) -> float:
        """The signed change of p for one update (before clamping)."""
        direction = math.copysign(1.0, sign_real_mean - self.target) if sign_real_mean != self.target else 0.0
        return direction * batch_size * self.interval / (self.kimg * 1000)

    @torch.no_grad()
    def update(self, pipe: AugmentPipe, sign_real_mean: float, batch_size: int) -> float:
        """Move ``pipe.p`` by :meth:`adjustment`, clamp to [0, 1], and return the new p."""
        sign_real_mean = float(sign_real_mean)
        if not math.isfinite(sign_real_mean):
            return float(pipe.p)
        new_p = min(max(float(pipe.p) + self.adjustment(sign_real_mean, batch_size), 0.0), 1.0)
        pipe.p.fill_(new_p)
        self.num_updates += 1
        self.last_signs = sign_real_mean
        return new_p

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for resuming (p itself lives in the pipe's ``p`` buffer)."""
        return {
            "target": self.target,
            "interval": self.interval,
            "kimg": self.kimg,
            "num_updates": self.num_updates,
            "last_signs": self.last_signs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (unknown keys of older snapshots are ignored)."""
        self.target = float(state.get("target", self.target))
        self.interval = int(state.get("interval", self.interval))
        self.kimg = float(state.get("kimg", self.kimg))
        self.num_updates = int(state.get("num_updates", 0))
        last = state.get("last_signs")
        self.last_signs = None if last is None else float(last)
