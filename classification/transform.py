"""The classifier's eval transform (images in the generator's [-1, 1] range -> network input) and the
training augmentation that precedes it.

Eval transform, for ``[N, C, H, W]`` float images in [-1, 1] (``C`` = 1 or 3), all differentiable:

1. ``x = (x + 1) / 2``: to [0, 1];
2. centre crop to ``round(center_crop * H) x round(center_crop * W)`` (only when ``center_crop < 1``:
   models imported from pipelines that cropped, e.g. torchvision ``Resize(256) + CenterCrop(224)``
   is ``center_crop = 0.875`` on 256 px images);
3. resize to ``input_size x input_size``, bilinear with antialiasing (skipped when already that size);
4. channels: 1 -> 3 by replication, 3 -> 1 by the mean of the three;
5. ``(x - mean) / std`` per channel.

Training applies :class:`Augment` (per sample, in [0, 1]) to each image first, then the very same
:class:`EvalTransform`. uint8 pixels ``u`` map to [-1, 1] as ``u / 127.5 - 1``, as in GAN training.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["TRANSFORM_NAME", "Augment", "EvalTransform", "images_uint8_to_float"]

#: Name (and version) of the transform above, stored in model files; a file naming another is refused.
TRANSFORM_NAME = "spinegan-eval-v1"


def images_uint8_to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` (or ``[C, H, W]``) -> float32 in [-1, 1]: ``u / 127.5 - 1`` (0 -> -1, 255 -> 1)."""
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images_uint8.dtype}")
    return images_uint8.to(torch.float32) / 127.5 - 1


@dataclass(frozen=True)
class EvalTransform:
    """The eval transform of the module docstring. Holds no network: cheap to pickle into workers."""

    input_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    center_crop: float = 1.0

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, not {self.in_channels}")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(
                f"mean and std need {self.in_channels} values (one per channel), got {list(self.mean)} "
                f"and {list(self.std)}"
            )
        if not all(s > 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {list(self.std)}")
        if not 0 < self.center_crop <= 1:
            raise ValueError(f"center_crop must be in (0, 1], got {self.center_crop}")
        if self.input_size < 1:
            raise ValueError(f"input_size must be positive, got {self.input_size}")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` in [-1, 1] -> ``[N, in_channels, input_size, input_size]`` float32."""
        return self.from_unit(images.to(torch.float32).add(1).div(2))

    def from_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Steps 2-5 for ``[N, C, H, W]`` float images in [0, 1]."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images [N, C, H, W] with C = 1 or 3, got shape {list(x.shape)}")
        if self.center_crop < 1:
            h, w = x.shape[2], x.shape[3]
            ch, cw = max(1, round(self.center_crop * h)), max(1, round(self.center_crop * w))
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[:, :, top : top + ch, left : left + cw]
        size = self.input_size
        if x.shape[2] != size or x.shape[3] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if x.shape[1] != self.in_channels:
            x = x.expand(-1, 3, -1, -1) if self.in_channels == 3 else x.mean(dim=1, keepdim=True)
        mean, std = self._normalisation(x.device, x.dtype)
        return (x - mean) / std

    @functools.lru_cache(maxsize=8)  # noqa: B019 (instances are few and frozen)
    def _normalisation(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``std`` as ``[1, C, 1, 1]`` tensors on ``device``, made once (no host-to-device
        copy per call, which would synchronise a CUDA training step)."""
        mean = torch.tensor(self.mean, dtype=dtype, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=dtype, device=device).view(1, -1, 1, 1)
        return mean, std

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (stored in model files for people; the typed fields are what count)."""
        steps = ["(x + 1) / 2 (from [-1, 1] to [0, 1])"]
        if self.center_crop < 1:
            steps.append(f"centre crop keeping {self.center_crop:g} of each side")
        steps += [
            f"resize to {self.input_size}x{self.input_size} (bilinear, antialias, align_corners=False)",
            f"channels to {self.in_channels} (1 -> 3 replicated, 3 -> 1 averaged)",
            "(x - mean) / std per channel",
        ]
        return {
            "name": TRANSFORM_NAME,
            "input_range": [-1.0, 1.0],
            "uint8_to_input_range": "u / 127.5 - 1",
            "steps": steps,
        }


@dataclass(frozen=True)
class Augment:
    """Per-sample training augmentation in [0, 1] (torchvision ``transforms.v2``), applied before the eval
    transform: horizontal flip with probability ``hflip``, rotation by a uniform angle in
    ``[-rotate, rotate]`` degrees (bilinear, black fill), and a random resized crop of
    ``crop_scale``-1 of the area with aspect ratio 3/4-4/3, resized back to the image's own size
    (bilinear, antialias). Each sample's randomness comes from its own ``seed`` (:meth:`__call__`), so
    results do not depend on batch size or the number of loader workers.
    """

    hflip: float = 0.5
    rotate: float = 5.0
    crop_scale: float = 0.8

    def __post_init__(self) -> None:
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"hflip probability must be in [0, 1], got {self.hflip}")
        if not 0 <= self.rotate <= 180:
            raise ValueError(f"rotation must be 0-180 degrees, got {self.rotate}")
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"crop scale must be in (0, 1], got {self.crop_scale}")

    def __call__(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        """``[C, H, W]`` float in [0, 1] on the CPU -> augmented ``[C, H, W]`` in [0, 1]; the same ``seed``
        gives the same result. The caller's torch RNG state is left untouched."""
        from torchvision.transforms import v2

        ops: list[Any] = []
        if self.hflip > 0:
            ops.append(v2.RandomHorizontalFlip(p=self.hflip))
        if self.rotate > 0:
            ops.append(v2.RandomRotation(self.rotate, interpolation=v2.InterpolationMode.BILINEAR, fill=0.0))
        if self.crop_scale < 1:
            size: Sequence[int] = tuple(image.shape[-2:])
            ops.append(v2.RandomResizedCrop(size, scale=(self.crop_scale, 1.0), antialias=True))
        if not ops:
            return image
        with torch.random.fork_rng(devices=[]):
            # CPU generator only: torch.manual_seed would also queue (slow) seeding of every CUDA device.
            torch.default_generator.manual_seed(seed)
            return v2.Compose(ops)(image).clamp(0, 1)

    def describe(self) -> dict[str, Any]:
        return {
            "space": "[0, 1], per sample, before the eval transform",
            "hflip_p": self.hflip,
            "rotate_deg": self.rotate,
            "resized_crop_scale": [self.crop_scale, 1.0],
            "resized_crop_ratio": [0.75, 4 / 3],
        }
