"""Tiny image folders for the training tests, and the common command-line options of a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent


def make_shapes(
    folder: Path, n: int = 16, res: int = 16, labels: bool = True, channels: int = 1, seed: int = 0
) -> Path:
    """``n`` images (class 0: disc, class 1: square, alternating) with ``dataset.json`` when ``labels``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:res, :res]
    entries = []
    for i in range(n):
        cls = i % 2
        cy, cx = rng.uniform(res * 0.35, res * 0.65, size=2)
        r = rng.uniform(res * 0.18, res * 0.3)
        if cls == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
        img = (mask * 255).astype(np.uint8)
        if channels == 3:
            Image.fromarray(np.stack([img] * 3, axis=2), "RGB").save(folder / f"img{i:04d}.png")
        else:
            Image.fromarray(img, "L").save(folder / f"img{i:04d}.png")
        entries.append([f"img{i:04d}.png", cls])
    if labels:
        (folder / "dataset.json").write_text(json.dumps({"labels": entries}))
    return folder


def tiny_args(
    outdir: Path, data: Path, *extra: str, kimg: float = 0.016, tick: float = 0.008, snap: int = 1
) -> list[str]:
    """train.py arguments of a tiny, fast CPU run (16x16, small channels, batch 4, no loader workers)."""
    return [
        "--outdir",
        str(outdir),
        "--data",
        str(data),
        "--batch",
        "4",
        "--cbase",
        "256",
        "--cmax",
        "32",
        "--map-depth",
        "2",
        "--kimg",
        str(kimg),
        "--tick",
        str(tick),
        "--snap",
        str(snap),
        "--device",
        "cpu",
        "--workers",
        "0",
        *extra,
    ]
