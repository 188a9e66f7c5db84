"""Make the toy two-class dataset: white discs (class 0) and squares (class 1) on black.

    python bench/make_toy_shapes.py --out /tmp/toy_shapes --count 1000 --res 32

Writes ``<out>/<class>/NNNNN.png`` (8-bit grayscale) and ``<out>/dataset.json`` in upstream's format
(``{"labels": [[relative path, class], ...]}``). Sizes and positions are random; every shape lies inside
the image; edges are anti-aliased. ``--layout anywhere`` (default) places each shape anywhere it fits
(radius / half side 18-32 % of the image); ``--layout centred`` keeps it within 1/16 of the image of the
centre (radius / half side 22-36 %), an easier set whose only large variation is the class. Used by
``bench/toy_shapes_check.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ("disc", "square")


LAYOUTS = ("anywhere", "centred")


def draw_shape(
    cls: int, res: int, rng: np.random.Generator, supersample: int = 4, layout: str = "anywhere"
) -> np.ndarray:
    """uint8 [res, res]: a white disc (cls 0) or axis-aligned square (cls 1) on black, anti-aliased
    (rendered at ``supersample`` x the resolution and box-filtered down); see the module docstring for
    ``layout``."""
    if layout == "centred":
        half = rng.uniform(0.22, 0.36) * res  # radius / half side, pixels
        cy, cx = res / 2 + rng.uniform(-res / 16, res / 16, size=2)
    elif layout == "anywhere":
        half = rng.uniform(0.18, 0.32) * res
        cy, cx = rng.uniform(half + 1, res - half - 1, size=2)
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    s = supersample
    yy, xx = (np.mgrid[: res * s, : res * s] + 0.5) / s
    if cls == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= half**2
    else:
        mask = (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half)
    cover = mask.reshape(res, s, res, s).mean(axis=(1, 3))  # [res, res] fraction of each pixel covered
    return np.rint(cover * 255).astype(np.uint8)


def make_toy_shapes(
    out: Path, count: int = 1000, res: int = 32, seed: int = 0, layout: str = "anywhere"
) -> Path:
    """``count`` images per class at ``res`` x ``res``; returns ``out``."""
    rng = np.random.default_rng(seed)
    labels = []
    for cls, name in enumerate(CLASS_NAMES):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rel = f"{name}/{i:05d}.png"
            Image.fromarray(draw_shape(cls, res, rng, layout=layout), "L").save(out / rel)
            labels.append([rel, cls])
    (out / "dataset.json").write_text(json.dumps({"labels": labels}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, default=1000, help="images per class")
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layout", choices=LAYOUTS, default="anywhere")
    a = ap.parse_args()
    make_toy_shapes(a.out, a.count, a.res, a.seed, a.layout)
    print(f"wrote {2 * a.count} images to {a.out}")


if __name__ == "__main__":
    main()
