"""Latent-space videos of a trained generator: a looping walk through keyframes, and class morphs.

Two kinds of clip, both tiled as a ``grid_w x grid_h`` grid of cells and written as a video file:

* **Keyframe loop** (:func:`loop_ws`). Cell ``j`` of keyframe ``k`` shows seed
  ``seeds[(k * cells + j) % len(seeds)]`` (``cells = grid_w * grid_h``). Without ``num_keyframes`` the
  seed list must fill every cell of every keyframe exactly (``len(seeds) / cells`` keyframes). Each
  seed's latent is mapped to W (with the class label and truncation), and each cell follows a periodic
  cubic spline through its keyframe w's (``scipy.interpolate.CubicSpline``, ``bc_type='periodic'``,
  knots at 0, 1, ..., K with the first keyframe repeated at K), so the clip loops seamlessly: frame ``f``
  of ``K * w_frames`` is the spline at ``f / w_frames``, and frame ``k * w_frames`` is exactly keyframe
  ``k``'s image.
* **Class morph** (:func:`morph_ws`). For each cell's fixed latent ``z``, the w of class ``a`` moves to
  the w of class ``b`` (``torch.lerp`` in W space with a cosine ease, ``0.5 - 0.5 cos(pi t)``), for each
  consecutive pair of the class list, ``w_frames`` frames per step. The first frame is exactly the image
  ``generate.py --class a`` writes for that seed, the last exactly the one of the last class (a list
  that ends on its first class, like ``0,1,0``, loops and leaves that last frame out).

Latents, truncation, pixel conversion and noise (``const``/``none``) are those of
:mod:`stylegan2_ada.generation`. 1-channel images are repeated to RGB; a frame with an odd width or
height gets one black column/row (yuv420p needs even sizes). Frames are encoded by imageio-ffmpeg's
bundled ffmpeg, as H.264 in MP4 (libx264, CRF 10, ``+faststart`` for the web) or VP9 in WebM
(libvpx-vp9, CRF 24) by the output's suffix, into a temporary file that replaces the output only when
complete.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stylegan2_ada.atomic import atomic_path
from stylegan2_ada.generation import (
    GenerationError,
    class_label,
    images_to_uint8,
    load_network_file,
    resolve_device,
    seed_latents,
    select_generator,
)

__all__ = [
    "LoopSpline",
    "VIDEO_FORMATS",
    "VideoResult",
    "keyframe_seeds",
    "load_generator",
    "loop_ws",
    "make_video",
    "map_seeds",
    "morph_ws",
    "parse_classes",
    "parse_grid",
    "render_frames",
    "tile",
    "write_video",
]

VIDEO_NOISE_MODES = ("const", "none")  # 'random' noise would flicker from frame to frame
#: Output file suffix -> (ffmpeg encoder, output options). H.264 in MP4 plays in most players and
#: browsers; VP9 in WebM plays in every browser, including builds without patent-encumbered codecs.
VIDEO_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".mp4": ("libx264", ("-crf", "10", "-f", "mp4", "-movflags", "+faststart")),
    ".webm": ("libvpx-vp9", ("-crf", "24", "-b:v", "0", "-f", "webm")),
}


@dataclass
class VideoResult:
    """What :func:`make_video` wrote: ``path``, ``frames`` (count), ``size`` (width, height), ``fps``."""

    path: Path
    frames: int
    size: tuple[int, int]
    fps: float


# --------------------------------------------------------------------------------------------------
# Options.


def parse_grid(text: str) -> tuple[int, int]:
    """``'4x2'`` -> ``(4, 2)`` (width, height); both at least 1."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise GenerationError(f"bad grid {text!r}: use WxH with positive integers, e.g. '2x2'", param="grid")
    return int(match.group(1)), int(match.group(2))


def parse_classes(text: str) -> list[int]:
    """``'0,1'`` -> ``[0, 1]``: at least two class indices, consecutive ones different."""
    try:
        classes = [int(item) for item in text.split(",")]
    except ValueError:
        raise GenerationError(
            f"bad class list {text!r}: use class indices like '0,1' or '0,1,0'", param="morph"
        ) from None
    if len(classes) < 2:
        raise GenerationError(f"--morph needs at least two classes, e.g. '0,1'; got {text!r}", param="morph")
    if any(a == b for a, b in zip(classes, classes[1:])):
        raise GenerationError(f"--morph {text!r} repeats a class in consecutive places", param="morph")
    return classes


def keyframe_seeds(seeds: Sequence[int], cells: int, num_keyframes: int | None) -> list[list[int]]:
    """The seed of each keyframe's cells, ``[K][cells]`` (see the module docstring)."""
    if not seeds:
        raise GenerationError("no seeds given", param="seeds")
    if num_keyframes is None:
        if len(seeds) % cells:
            raise GenerationError(
                f"{len(seeds)} seeds do not fill a {cells}-cell grid evenly; give a multiple of {cells} seeds, "
                "or --num-keyframes to reuse them",
                param="seeds",
            )
        num_keyframes = len(seeds) // cells
    if num_keyframes < 1:
        raise GenerationError(
            f"--num-keyframes must be at least 1, not {num_keyframes}", param="num-keyframes"
        )
    return [[seeds[(k * cells + j) % len(seeds)] for j in range(cells)] for k in range(num_keyframes)]


# --------------------------------------------------------------------------------------------------
# W-space paths.


@torch.no_grad()
def map_seeds(
    G: nn.Module, seeds: Sequence[int], label: torch.Tensor, truncation_psi: float, device: torch.device
) -> torch.Tensor:
    """The w's of ``seeds`` under the one-hot ``label`` [1, c_dim]: float32 [N, num_ws, w_dim] on the CPU."""
    z = seed_latents(seeds, G.z_dim).to(device)  # [N, z_dim]
    c = label.to(device).expand(len(seeds), -1)  # [N, c_dim]
    return G.mapping(z, c, truncation_psi=truncation_psi).to(torch.float32).cpu()


class LoopSpline:
    """Periodic cubic spline through ``keyframes`` [K, ...] at t = 0..K-1, with value(K) = value(0).

    ``self(t)`` -> float32 tensor [...] for any real t (periodic with period K); at integer t it returns
    the keyframe exactly. One keyframe gives a constant.
    """

    def __init__(self, keyframes: torch.Tensor) -> None:
        from scipy.interpolate import CubicSpline

        self._keyframes = keyframes.to(torch.float32).cpu()
        self.period = keyframes.shape[0]
        self._spline = None
        if self.period > 1:
            values = torch.cat([self._keyframes, self._keyframes[:1]]).to(torch.float64).numpy()
            self._spline = CubicSpline(np.arange(self.period + 1), values, axis=0, bc_type="periodic")

    def __call__(self, t: float) -> torch.Tensor:
        t = math.fmod(t, self.period) + (self.period if t < 0 else 0)
        if self._spline is None or float(t).is_integer():
            return self._keyframes[int(t) % self.period].clone()
        return torch.from_numpy(self._spline(t)).to(torch.float32)


def loop_ws(
    G: nn.Module,
    table: Sequence[Sequence[int]],
    label: torch.Tensor,
    *,
    truncation_psi: float,
    w_frames: int,
    device: torch.device,
) -> Iterator[torch.Tensor]:
    """Per frame, the w's of every cell [cells, num_ws, w_dim]: ``len(table) * w_frames`` frames."""
    num_keyframes, cells = len(table), len(table[0])
    flat = [seed for row in table for seed in row]
    ws = map_seeds(G, flat, label, truncation_psi, device)  # [K * cells, num_ws, w_dim]
    spline = LoopSpline(ws.reshape(num_keyframes, cells, *ws.shape[1:]))
    for frame in range(num_keyframes * w_frames):
        yield spline(frame / w_frames)


def morph_ws(
    G: nn.Module,
    seeds: Sequence[int],
    classes: Sequence[int],
    *,
    truncation_psi: float,
    w_frames: int,
    device: torch.device,
    class_names: Sequence[str] | None = None,
) -> Iterator[torch.Tensor]:
    """Per frame, the w's [cells, num_ws, w_dim] of the morph through ``classes`` (module docstring)."""
    ends = [
        map_seeds(G, seeds, class_label(int(G.c_dim), k, class_names), truncation_psi, device)
        for k in classes
    ]
    for start, stop in zip(ends, ends[1:]):
        for frame in range(w_frames):
            ease = 0.5 - 0.5 * math.cos(math.pi * frame / w_frames)
            yield torch.lerp(start, stop, ease)
    if classes[-1] != classes[0]:
        yield ends[-1]


# --------------------------------------------------------------------------------------------------
# Frames and encoding.


def tile(images: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``[cells, H, W, C]`` uint8 (C = 1 or 3) -> one RGB frame ``[gh*H', gw*W', 3]``, even-sized.

    Cell ``j`` goes to row ``j // gw``, column ``j % gw``; a grey image is repeated to RGB; one black
    row/column is added if the height/width is odd.
    """
    gw, gh = grid
    cells, h, w, c = images.shape
    if cells != gw * gh:
        raise ValueError(f"{cells} images do not fill a {gw}x{gh} grid")
    if c == 1:
        images = np.repeat(images, 3, axis=3)
    elif c != 3:
        raise GenerationError(f"{c}-channel images cannot be shown as video (1 or 3 only)", param="network")
    frame = images.reshape(gh, gw, h, w, 3).transpose(0, 2, 1, 3, 4).reshape(gh * h, gw * w, 3)
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)))
    return np.ascontiguousarray(frame)


@torch.no_grad()
def render_frames(
    G: nn.Module,
    frames_ws: Iterable[torch.Tensor],
    grid: tuple[int, int],
    *,
    noise_mode: str = "const",
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> Iterator[np.ndarray]:
    """Synthesize each frame's w's [cells, num_ws, w_dim] and yield the tiled RGB frame (uint8).

    Several frames go through the synthesis network together, about ``batch_size`` images at a time.
    Float32 on CPU; the network's own precision on CUDA.
    """
    if noise_mode not in VIDEO_NOISE_MODES:
        raise GenerationError(f"noise mode must be one of {', '.join(VIDEO_NOISE_MODES)}", param="noise-mode")
    device = torch.device(device)
    cells = grid[0] * grid[1]
    for chunk in _chunks(frames_ws, max(1, batch_size // cells)):
        ws = torch.cat(chunk).to(device)  # [F * cells, num_ws, w_dim]
        images = G.synthesis(ws, noise_mode=noise_mode, force_fp32=device.type == "cpu")
        pixels = images_to_uint8(images).numpy()  # [F * cells, H, W, C]
        for start in range(0, len(pixels), cells):
            yield tile(pixels[start : start + cells], grid)


def _chunks(items: Iterable[torch.Tensor], size: int) -> Iterator[list[torch.Tensor]]:
    chunk: list[torch.Tensor] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_video(
    path: str | os.PathLike[str], frames: Iterable[np.ndarray], *, fps: float
) -> tuple[int, tuple[int, int]]:
    """Encode RGB frames (uint8 [H, W, 3], all the same even size) at ``path``, atomically, in the format
    its suffix names (:data:`VIDEO_FORMATS`). Returns the number of frames and their (width, height)."""
    import imageio_ffmpeg

    path = os.fspath(path)
    codec, options = _video_format(path)
    count, size = 0, (0, 0)
    with atomic_path(path) as tmp:
        writer = None
        try:
            for frame in frames:
                if writer is None:
                    size = (frame.shape[1], frame.shape[0])
                    writer = imageio_ffmpeg.write_frames(
                        tmp,
                        size,
                        fps=fps,
                        codec=codec,
                        quality=None,
                        macro_block_size=1,
                        output_params=list(options),
                    )
                    writer.send(None)
                writer.send(np.ascontiguousarray(frame, dtype=np.uint8))
                count += 1
        except (OSError, RuntimeError) as exc:
            raise GenerationError(f"{path}: cannot write the video: {exc}", param="output") from exc
        finally:
            if writer is not None:
                writer.close()
        if count == 0:
            raise GenerationError("no frames to write", param="w-frames")
    return count, size


def _video_format(path: str | os.PathLike[str]) -> tuple[str, tuple[str, ...]]:
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise GenerationError(
            f"{path}: the output must be a {' or '.join(VIDEO_FORMATS)} file (the suffix picks the format)",
            param="output",
        )
    return VIDEO_FORMATS[suffix]


# --------------------------------------------------------------------------------------------------
# The whole job.


def load_generator(
    network: str | os.PathLike[str], device: torch.device
) -> tuple[nn.Module, list[str] | None]:
    """Load ``G_ema`` (or ``G``) from a native checkpoint or upstream ``.pkl`` (safely); also its class names."""
    loaded = load_network_file(os.path.abspath(os.fspath(network)), device)
    _, G = select_generator(loaded.networks)
    names = loaded.metadata.get("class_names")
    valid = isinstance(names, list) and len(names) == G.c_dim and all(isinstance(n, str) for n in names)
    return G, (names if valid else None)


def make_video(
    network: str | os.PathLike[str],
    output: str | os.PathLike[str],
    seeds: Sequence[int],
    *,
    grid: tuple[int, int] = (1, 1),
    num_keyframes: int | None = None,
    w_frames: int = 120,
    truncation_psi: float = 1.0,
    class_idx: int | None = None,
    morph: Sequence[int] | None = None,
    fps: float = 60,
    noise_mode: str = "const",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> VideoResult:
    """Write a keyframe loop (or, with ``morph``, a class morph) of ``network`` to ``output`` (.mp4/.webm).

    Raises:
        GenerationError: with ``param`` naming the option at fault.
    """
    from tqdm import tqdm

    output = Path(output)
    _video_format(output)
    if output.is_dir():
        raise GenerationError(f"{output}: is a folder", param="output")
    if w_frames < 1:
        raise GenerationError(f"--w-frames must be at least 1, not {w_frames}", param="w-frames")
    if not fps > 0:
        raise GenerationError(f"--fps must be positive, not {fps}", param="fps")
    if batch_size < 1:
        raise GenerationError(f"batch size must be at least 1; got {batch_size}", param="batch")
    if noise_mode not in VIDEO_NOISE_MODES:
        raise GenerationError(f"noise mode must be one of {', '.join(VIDEO_NOISE_MODES)}", param="noise-mode")
    cells = grid[0] * grid[1]
    device = resolve_device(device)
    if morph is not None:
        if class_idx is not None:
            raise GenerationError(
                "--class and --morph exclude each other (--morph names the classes)", param="class"
            )
        if num_keyframes is not None:
            raise GenerationError("--num-keyframes does not apply to --morph", param="num-keyframes")
        if len(seeds) != cells:
            raise GenerationError(
                f"--morph needs one seed per grid cell ({cells}); got {len(seeds)}", param="seeds"
            )
    else:
        table = keyframe_seeds(seeds, cells, num_keyframes)
    G, class_names = load_generator(network, device)
    if morph is not None:
        if G.c_dim == 0:
            raise GenerationError(
                "--morph needs a conditional network; this one has no classes", param="morph"
            )
        for k in morph:
            class_label(int(G.c_dim), k, class_names)  # range check with the valid classes in the message
        ws = morph_ws(
            G,
            seeds,
            morph,
            truncation_psi=truncation_psi,
            w_frames=w_frames,
            device=device,
            class_names=class_names,
        )
        total = (len(morph) - 1) * w_frames + (morph[-1] != morph[0])
    else:
        label = class_label(int(G.c_dim), class_idx, class_names)
        ws = loop_ws(G, table, label, truncation_psi=truncation_psi, w_frames=w_frames, device=device)
        total = len(table) * w_frames
    output.parent.mkdir(parents=True, exist_ok=True)
    frames = render_frames(G, ws, grid, noise_mode=noise_mode, batch_size=batch_size, device=device)
    with tqdm(frames, total=total, unit="frame", desc="Rendering", disable=not progress) as bar:
        count, size = write_video(output, bar, fps=fps)
    return VideoResult(path=output, frames=count, size=size, fps=fps)
