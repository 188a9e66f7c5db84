"""The embedded default dataset: two classes of toy shapes (white discs vs white squares on black).

``python train.py --data demo --cond 1 ...`` trains on it, so a fresh checkout can run the main job with no
data of its own. The set is generated deterministically (from ``seed``) into a folder of 8-bit grayscale
PNGs with an upstream-format ``dataset.json`` (``class_names = ["disc", "square"]``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from stylegan2_ada.atomic import atomic_write, write_json_atomic

DEMO_NAME = "demo"
CLASS_NAMES = ("disc", "square")


def render_shape(kind: int, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """One [resolution, resolution] uint8 image: a white disc (kind 0) or axis-aligned square (kind 1).

    Size (diameter / side) is 40-70 % of the image and the centre is jittered so the shape stays inside.
    Edges are anti-aliased by 4x4 supersampling.
    """
    s = 4
    size = rng.uniform(0.4, 0.7) * resolution
    margin = size / 2 + 1
    cy, cx = rng.uniform(margin, resolution - margin, size=2)
    coords = (np.arange(resolution * s) + 0.5) / s  # pixel-centre coordinates of the supersampled grid
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    if kind == 0:
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size / 2) ** 2
    else:
        inside = (np.abs(yy - cy) <= size / 2) & (np.abs(xx - cx) <= size / 2)
    img = inside.reshape(resolution, s, resolution, s).mean(axis=(1, 3))
    return np.round(img * 255).astype(np.uint8)


def _is_complete(dest: Path) -> bool:
    """``dest/dataset.json`` exists and every image it lists is there."""
    try:
        labels = json.loads((dest / "dataset.json").read_text())["labels"]
        return all((dest / name).is_file() for name, _ in labels)
    except (OSError, ValueError, KeyError, TypeError):  # absent, unreadable or not ours: write it anew
        return False


def make_demo_dataset(dest: str | os.PathLike, resolution: int = 32, count: int = 512, seed: int = 0) -> Path:
    """Write the demo dataset into ``dest`` (created) unless a complete copy is already there.

    Returns the folder. ``count`` images, alternating classes. Files are written atomically and
    ``dataset.json`` last, so an interrupted run is redone rather than half-used; so is a copy that
    lost images since (the dataset refuses labels for absent files).
    """
    dest = Path(dest)
    labels_path = dest / "dataset.json"
    if _is_complete(dest):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = []
    for i in range(count):
        kind = i % 2
        name = f"{CLASS_NAMES[kind]}-{i:05d}.png"
        image = Image.fromarray(render_shape(kind, resolution, rng), mode="L")
        atomic_write(dest / name, lambda f, image=image: image.save(f, format="PNG"))
        labels.append([name, kind])
    write_json_atomic(labels_path, {"labels": labels, "class_names": list(CLASS_NAMES)})
    return dest
