"""Image grids written during training: ``reals.png``, ``fakes_init.png`` and ``fakesNNNNNN.png``.

Grid size follows upstream (``gw = clip(7680 // W, 7, 32)`` columns by ``gh = clip(4320 // H, 4, 32)``
rows) but is capped at 16 x 16 for resolutions below 128 so that small runs stay cheap. For conditional
runs each row holds one class (classes cycle over the rows, in label order).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from stylegan2_ada.atomic import write_png_atomic

SMALL_RES_CAP = 16


def grid_shape(resolution: int, num_classes: int = 0) -> tuple[int, int]:
    """(columns, rows) of the snapshot grid for square images of ``resolution`` pixels.

    For conditional runs (``num_classes`` > 0) the number of rows is a multiple of the number of classes
    (at least one row per class, at most 32 classes shown).
    """
    gw = int(np.clip(7680 // resolution, 7, 32))
    gh = int(np.clip(4320 // resolution, 4, 32))
    if resolution < 128:
        gw, gh = min(gw, SMALL_RES_CAP), min(gh, SMALL_RES_CAP)
    if num_classes > 0:
        shown = min(num_classes, 32)
        gh = max(gh // shown, 1) * shown
    return gw, gh


def _label_key(label: np.ndarray) -> tuple[float, ...]:
    return tuple(float(x) for x in np.asarray(label).reshape(-1))


def select_grid(
    dataset: Any, labels: np.ndarray | None, resolution: int, seed: int = 0
) -> tuple[tuple[int, int], list[int], np.ndarray]:
    """Choose the real images of the grid.

    Args:
        dataset: has ``__len__``.
        labels: [len(dataset), c_dim] float32 labels, or ``None``/c_dim 0 for an unconditional run.
        resolution: image size in pixels. seed: selection seed (independent of the training RNG).

    Returns ``((gw, gh), indices [gw*gh], grid_labels [gw*gh, c_dim])``; rows are grouped by label for
    conditional runs (class 0 first for one-hot labels; classes cycle if there are more rows).
    """
    rnd = np.random.RandomState(seed)
    n = len(dataset)
    c_dim = 0 if labels is None else int(labels.shape[1])
    if c_dim == 0:
        gw, gh = grid_shape(resolution)
        order = np.arange(n)
        rnd.shuffle(order)
        idx = [int(order[i % n]) for i in range(gw * gh)]
        return (gw, gh), idx, np.zeros([gw * gh, 0], dtype=np.float32)
    groups: dict[tuple[float, ...], list[int]] = {}
    for i in range(n):
        groups.setdefault(_label_key(labels[i]), []).append(i)
    keys = sorted(groups, key=lambda k: (int(np.argmax(k)) if k else 0, k))  # one-hot: class 0 first
    gw, gh = grid_shape(resolution, num_classes=len(keys))
    for k in keys:
        rnd.shuffle(groups[k])
    idx: list[int] = []
    used = {k: 0 for k in keys}
    for row in range(gh):
        k = keys[row % len(keys)]
        members = groups[k]
        for _ in range(gw):
            idx.append(members[used[k] % len(members)])
            used[k] += 1
    grid_labels = labels[np.asarray(idx)].astype(np.float32)
    return (gw, gh), idx, grid_labels


def images_to_grid(
    images: np.ndarray | torch.Tensor, grid_size: tuple[int, int], drange: Sequence[float] = (-1, 1)
) -> np.ndarray:
    """[N = gw*gh, C, H, W] float in ``drange`` -> uint8 [gh*H, gw*W] (C=1) or [gh*H, gw*W, C] (C=3)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    lo, hi = float(drange[0]), float(drange[1])
    img = (np.asarray(images, dtype=np.float32) - lo) * (255.0 / (hi - lo))
    img = np.rint(img).clip(0, 255).astype(np.uint8)
    gw, gh = grid_size
    n, c, h, w = img.shape
    if n != gw * gh:
        raise ValueError(f"{n} images do not fill a {gw}x{gh} grid")
    img = img.reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)  # [gh*H, gw*W, C]
    if c == 1:
        return img[:, :, 0]
    if c == 3:
        return img
    raise ValueError(f"cannot save a grid of {c}-channel images (need 1 or 3)")


def save_image_grid(
    images: np.ndarray | torch.Tensor,
    path: str | os.PathLike[str],
    grid_size: tuple[int, int],
    drange: Sequence[float] = (-1, 1),
) -> None:
    """Save [gw*gh, C, H, W] images in ``drange`` as one PNG (``L`` for 1 channel, ``RGB`` for 3), atomically."""
    write_png_atomic(path, images_to_grid(images, grid_size, drange))


@torch.no_grad()
def generate_grid_images(G: nn.Module, z: torch.Tensor, c: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """``G(z, c, noise_mode='const')`` in chunks: z [N, z_dim], c [N, c_dim] -> float [N, C, H, W] on CPU."""
    out = []
    for zi, ci in zip(z.split(batch), c.split(batch)):
        out.append(G(zi, ci, noise_mode="const").float().cpu())
    return torch.cat(out)
