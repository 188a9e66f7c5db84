"""Scaled 8-bit copies of 16-bit greyscale PNGs (the logic behind the legacy ``scale_png.py``).

Two scalings, both exact integer arithmetic with rounding, no overflow and no division by zero:

``full`` (default): ``y = round(x / 257)``, i.e. the 16-bit range 0..65535 onto 0..255 -- the right
    choice for 16-bit PNGs from our converter (already windowed). This is the core's one 16-bit rule,
    :func:`stylegan2_ada.dataset.scale_16bit_to_8bit`, so scaled copies equal what training reads.
``max``: ``y = round(x * 255 / max(x))`` per image (an all-zero image stays zero) -- for the raw,
    un-windowed 16-bit PNGs the original SpineGAN ``image_main.py`` wrote. (The original computed
    ``x // ceil(max / 256)``, which wraps to 0 when max is a multiple of 256 and divides by zero on
    black images.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from data_processing.pngio import read_png, write_png
from stylegan2_ada.dataset import scale_16bit_to_8bit

__all__ = ["ScaleMode", "ScaleSummary", "scale_16_to_8", "scale_folder"]

ScaleMode = Literal["full", "max"]


def scale_16_to_8(image: np.ndarray, mode: ScaleMode = "full") -> np.ndarray:
    """uint16 [H, W] -> uint8 [H, W] (see the module docstring for ``mode``)."""
    if mode == "full":
        return scale_16bit_to_8bit(image)
    if mode != "max":
        raise ValueError(f"mode must be 'full' or 'max', not {mode!r}")
    x = image.astype(np.int64)
    top = int(x.max()) if x.size else 0
    if top == 0:
        return np.zeros(image.shape, np.uint8)
    return ((x * 255 + top // 2) // top).astype(np.uint8)


@dataclass
class ScaleSummary:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already 8-bit
    failed: list[str] = field(default_factory=list)  # "path: reason"


def scale_folder(
    directory: str, outdir: str | None = None, *, in_place: bool = False, mode: ScaleMode = "full"
) -> ScaleSummary:
    """Write 8-bit copies of the 16-bit PNGs under ``directory`` (recursive) into ``outdir`` (same tree).

    ``in_place=True`` replaces each 16-bit PNG by its 8-bit version (atomically) instead; it cannot be
    combined with ``outdir``. Without either, ``outdir`` defaults to ``<directory>_8bit``.
    """
    directory = os.path.abspath(directory)
    if in_place and outdir is not None:
        raise ValueError("--in-place and --outdir exclude each other")
    if not in_place:
        outdir = os.path.abspath(outdir or directory.rstrip(os.sep) + "_8bit")
        if os.path.commonpath([outdir, directory]) == directory:
            raise ValueError(
                f"--outdir {outdir} must not be inside --directory {directory} (use --in-place to replace)"
            )
    summary = ScaleSummary()
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(".png"):
                continue
            src = os.path.join(root, name)
            rel = os.path.relpath(src, directory)
            try:
                image = read_png(src)
            except Exception as exc:
                summary.failed.append(f"{src}: cannot read as a greyscale PNG ({exc})")
                continue
            if image.dtype == np.uint8:
                summary.skipped.append(rel)
                if not in_place:  # the copy folder is complete: 8-bit images are copied unchanged
                    write_png(os.path.join(outdir, rel), image)  # type: ignore[arg-type]
                continue
            dst = src if in_place else os.path.join(outdir, rel)  # type: ignore[arg-type]
            write_png(dst, scale_16_to_8(image, mode))
            summary.written.append(rel)
    return summary
