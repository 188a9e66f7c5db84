"""Test data for the classifier tests: small generated two-class image sets written as datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from stylegan2_ada.demo_data import render_shape

CLASS_NAMES = ["normal", "abnormal"]


def shape_images(
    n_per_class: int, resolution: int = 32, seed: int = 0, noise: float = 20.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, H, W], labels int [N])``: white discs (0, "normal") and squares (1,
    "abnormal") of random size and position, with Gaussian pixel noise of ``noise`` grey levels.
    Classes alternate."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(2 * n_per_class):
        kind = i % 2
        img = render_shape(kind, resolution, rng).astype(np.float64) * rng.uniform(0.6, 1.0)
        img += rng.normal(0, noise, img.shape)
        images.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
        labels.append(kind)
    return np.stack(images), np.array(labels)


def write_dataset(
    folder: Path,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    groups: list[str] | None = None,
    class_names: list[str] | None = CLASS_NAMES,
) -> Path:
    """Write ``images [N, H, W]`` (or ``[N, H, W, 3]``) as PNGs plus an upstream-format dataset.json."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (img, label) in enumerate(zip(images, labels)):
        name = f"img{i:04d}.png"
        Image.fromarray(img).save(folder / name)
        entries.append([name, int(label)])
    doc: dict = {"labels": entries}
    if class_names is not None:
        doc["class_names"] = class_names
    if groups is not None:
        doc["groups"] = {name: g for (name, _), g in zip(entries, groups)}
    (folder / "dataset.json").write_text(json.dumps(doc))
    return folder


def shapes_dataset(
    folder: Path, n_per_class: int = 60, resolution: int = 32, seed: int = 0, **kwargs
) -> Path:
    images, labels = shape_images(n_per_class, resolution, seed)
    return write_dataset(folder, images, labels, **kwargs)
