"""Generate images from a trained generator: one PNG per seed, plus a ``manifest.json``.

Compatible with upstream stylegan2-ada-pytorch's ``generate.py``: the latent of seed ``s`` is
``numpy.random.RandomState(s).randn(1, z_dim)``, the class label is one-hot, pixels are
``(img * 127.5 + 128).clamp(0, 255).to(torch.uint8)`` and files are named ``seed%04d.png``. Unlike
upstream it also writes 1-channel networks (as 8-bit ``L`` PNGs; 3-channel ones as ``RGB``), runs on
CPU or CUDA, batches, reads our native checkpoints as well as upstream ``.pkl`` snapshots (safely),
writes every file atomically and records what it did in ``manifest.json`` (strict JSON; the network
by file name and SHA-256, not by its folders, which may name a user or a site). Temporary files that a
killed run left in the output folder are removed at the start (:func:`prepare_outdir`). Every float
input must be finite; file-system failures are :class:`GenerationError` s naming the file.

Noise (``noise_mode``):

* ``'const'`` (default) and ``'none'`` are deterministic: the image of a seed depends only on the
  network, the seed, the class and the truncation.
* ``'random'`` is reproducible per seed: each image's noise is drawn on the CPU from its own
  ``torch.Generator`` seeded with the seed (:func:`seed_noise`; the caller's RNG state is untouched)
  and passed to the synthesis network as its noise inputs, so images are still synthesised in
  batches. A seed gives the same image whatever ``batch_size`` and whichever other seeds are
  generated with it, and the same noise on CPU and CUDA.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stylegan2_ada import checkpoint as _checkpoint
from stylegan2_ada import devices
from stylegan2_ada import legacy_pickle as _legacy_pickle
from stylegan2_ada.atomic import clean_stale_temp_files, write_json_atomic, write_png_atomic
from stylegan2_ada.compile import maybe_compile

__all__ = [
    "GenerationError",
    "GenerationResult",
    "MAX_SEED",
    "NOISE_MODES",
    "check_truncation_psi",
    "class_label",
    "generate_images",
    "images_to_uint8",
    "parse_seeds",
    "prepare_outdir",
    "resolve_device",
    "seed_latents",
    "seed_noise",
    "select_generator",
    "synthesize",
]

NOISE_MODES: tuple[str, ...] = ("const", "random", "none")
#: Largest seed numpy.random.RandomState accepts.
MAX_SEED = 2**32 - 1
MANIFEST_NAME = "manifest.json"
#: Age from which a temporary file in ``outdir`` counts as left by a killed run and is removed: our PNG
#: and JSON temporary files live for milliseconds, so a minute is ample for a concurrent run's.
_STALE_TEMP_AGE_S = 60.0
_NOISE_SEEDING_DOC = (
    "noise_mode 'random': each image's noise comes from its own CPU torch.Generator seeded with the seed, "
    "drawn layer by layer (G.synthesis.noise_resolutions()), so a seed reproduces its image regardless of "
    "batch size, other seeds and device; 'const' and 'none' are deterministic"
)


class GenerationError(ValueError):
    """A clear, user-facing problem with the inputs of a generation run.

    Attributes:
        param: the option at fault (``'network'``, ``'seeds'``, ``'class'``, ``'device'``, ``'outdir'``,
            ...) or ``None``.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class GenerationResult:
    """What a run wrote: ``files`` (seed -> PNG path, in seed order) and ``manifest_path``."""

    files: dict[int, Path]
    manifest_path: Path
    manifest: dict[str, Any]


# --------------------------------------------------------------------------------------------------
# Inputs.

_SEED_ITEM = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_seeds(text: str) -> list[int]:
    """Parse a seed list like ``'0-3,10'`` -> ``[0, 1, 2, 3, 10]``.

    Comma-separated non-negative integers or inclusive ranges ``a-b`` with ``a <= b``; each seed must be
    at most :data:`MAX_SEED`. Repeated seeds are kept once, in first-seen order.

    Raises:
        GenerationError (``param='seeds'``): empty list, bad syntax, reversed range or seed too large.
    """
    if not isinstance(text, str) or not text.strip():
        raise GenerationError("no seeds given; use e.g. '0-3,10'", param="seeds")
    seeds: dict[int, None] = {}
    for item in text.split(","):
        match = _SEED_ITEM.match(item)
        if not match:
            raise GenerationError(
                f"bad seed item {item.strip()!r} in {text!r}: use non-negative integers and ranges like '0-3,10'",
                param="seeds",
            )
        start = int(match.group(1))
        stop = int(match.group(2)) if match.group(2) is not None else start
        if stop < start:
            raise GenerationError(
                f"bad seed range {item.strip()!r}: the end is before the start", param="seeds"
            )
        if stop > MAX_SEED:
            raise GenerationError(f"seed {stop} is too large (at most {MAX_SEED})", param="seeds")
        if stop - start >= 10_000_000:
            raise GenerationError(f"seed range {item.strip()!r} is unreasonably long", param="seeds")
        for seed in range(start, stop + 1):
            seeds.setdefault(seed)
    return list(seeds)


def check_truncation_psi(psi: float) -> float:
    """``psi`` as a float if it is finite; GenerationError (``param='trunc'``) for NaN, infinity or a
    non-number (NaN would make every image black, infinity white)."""
    try:
        value = float(psi)
    except (TypeError, ValueError):
        raise GenerationError(f"truncation psi must be a number; got {psi!r}", param="trunc") from None
    if not math.isfinite(value):
        raise GenerationError(f"truncation psi must be a finite number; got {psi!r}", param="trunc")
    return value


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA if available, else CPU. An unusable device raises GenerationError."""
    try:
        return devices.resolve_device(device)
    except ValueError as exc:
        raise GenerationError(str(exc), param="device") from exc


def select_generator(networks: dict[str, nn.Module]) -> tuple[str, nn.Module]:
    """The generator to sample from: ``'G_ema'`` if present (as upstream), else ``'G'``."""
    for key in ("G_ema", "G"):
        if key in networks:
            return key, networks[key]
    raise GenerationError(
        f"the network file holds no generator (G_ema or G); it has: {', '.join(networks) or 'nothing'}",
        param="network",
    )


def _describe_classes(c_dim: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and len(class_names) == c_dim:
        return ", ".join(f"{i} ({name})" for i, name in enumerate(class_names))
    return ", ".join(str(i) for i in range(c_dim)) if c_dim <= 20 else f"0 to {c_dim - 1}"


def class_label(c_dim: int, class_idx: int | None, class_names: Sequence[str] | None = None) -> torch.Tensor:
    """One-hot class label ``[1, c_dim]`` (float32); ``[1, 0]`` for an unconditional network.

    Raises:
        GenerationError (``param='class'``): conditional network without a class, a class for an
            unconditional network, or a class out of range. The message lists the valid classes (with
            their names when ``class_names`` is given).
    """
    label = torch.zeros([1, c_dim], dtype=torch.float32)
    if c_dim == 0:
        if class_idx is not None:
            raise GenerationError(
                f"--class {class_idx} was given, but the network is unconditional (it has no classes); "
                "leave --class out",
                param="class",
            )
        return label
    if class_idx is None:
        raise GenerationError(
            f"the network is conditional with {c_dim} classes; choose one with --class K. "
            f"Valid classes: {_describe_classes(c_dim, class_names)}",
            param="class",
        )
    if not 0 <= class_idx < c_dim:
        raise GenerationError(
            f"class {class_idx} is out of range; valid classes: {_describe_classes(c_dim, class_names)}",
            param="class",
        )
    label[0, class_idx] = 1
    return label


def seed_latents(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """Latents ``[N, z_dim]`` float32: row i is ``numpy.random.RandomState(seeds[i]).randn(1, z_dim)``."""
    rows = [np.random.RandomState(seed).randn(1, z_dim) for seed in seeds]  # each [1, z_dim] float64
    return torch.from_numpy(np.concatenate(rows, axis=0)).to(torch.float32)


def seed_noise(seeds: Sequence[int], resolutions: Sequence[int]) -> list[torch.Tensor]:
    """Per-seed noise inputs for a synthesis network: one float32 CPU tensor [N, 1, R, R] per entry of
    ``resolutions`` (``G.synthesis.noise_resolutions()``). Row i comes from a ``torch.Generator``
    seeded with ``seeds[i]``, drawn layer by layer, so it does not depend on the other seeds."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    return [
        torch.stack([torch.randn([1, r, r], generator=g) for g in generators])  # [N, 1, R, R]
        for r in resolutions
    ]


def images_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` images in about [-1, 1] -> ``[N, H, W, C]`` uint8 on the CPU, as upstream:
    ``(img * 127.5 + 128).clamp(0, 255).to(torch.uint8)`` (truncation, not rounding)."""
    pixels = (images.to(torch.float32) * 127.5 + 128).clamp(0, 255).to(torch.uint8)  # [N, C, H, W]
    return pixels.permute(0, 2, 3, 1).cpu()  # [N, H, W, C]


# --------------------------------------------------------------------------------------------------
# Synthesis.


@torch.no_grad()
def synthesize(
    G: nn.Module,
    seeds: Sequence[int],
    label: torch.Tensor,
    *,
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    synthesis: Callable[..., torch.Tensor] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(seed, image)`` per seed, in order; image is uint8 ``[H, W, C]``.

    ``G`` must already be on ``device``. Float32 on CPU; on CUDA the network's own precision. See the
    module docstring for how ``noise_mode='random'`` is seeded. ``synthesis``: what to call instead of
    ``G.synthesis`` (e.g. its compiled form from :func:`stylegan2_ada.compile.maybe_compile`).
    """
    if noise_mode not in NOISE_MODES:
        raise GenerationError(
            f"noise mode must be one of {', '.join(NOISE_MODES)}; got {noise_mode!r}", param="noise-mode"
        )
    if batch_size < 1:
        raise GenerationError(f"batch size must be at least 1; got {batch_size}", param="batch")
    truncation_psi = check_truncation_psi(truncation_psi)
    device = torch.device(device)
    force_fp32 = device.type == "cpu"
    synthesis = synthesis if synthesis is not None else G.synthesis
    for start in range(0, len(seeds), batch_size):
        batch = list(seeds[start : start + batch_size])
        z = seed_latents(batch, G.z_dim).to(device)  # [B, z_dim]
        c = label.to(device).expand(len(batch), -1)  # [B, c_dim]
        ws = G.mapping(z, c, truncation_psi=truncation_psi)  # [B, num_ws, w_dim]
        noise = None
        if noise_mode == "random":
            noise = [t.to(device) for t in seed_noise(batch, G.synthesis.noise_resolutions())]
        images = synthesis(ws, noise_mode=noise_mode, noise=noise, force_fp32=force_fp32)  # [B, C, H, W]
        yield from zip(batch, images_to_uint8(images).numpy())


# --------------------------------------------------------------------------------------------------
# Output.


def _first_file_in(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` (or ``path``) that is not a folder, if any."""
    for candidate in reversed([path, *path.parents]):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def prepare_outdir(outdir: str | os.PathLike[str]) -> Path:
    """Create ``outdir`` if needed and remove temporary files a killed run left there.

    Raises:
        GenerationError: ``outdir`` is a file (``param='outdir'``), or it cannot be created (a part of
            the path is a file, no permission, read-only file system, ...; ``param=None``).
    """
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise GenerationError(f"{out}: exists and is not a folder", param="outdir")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = _first_file_in(out)
        reason = f"{blocker} is a file, not a folder" if blocker is not None else exc.strerror or str(exc)
        raise GenerationError(f"cannot create the output folder {out}: {reason}") from None
    clean_stale_temp_files(out, older_than_s=_STALE_TEMP_AGE_S)
    return out


def _write_output(write: Callable[[Path, Any], None], path: Path, content: Any) -> None:
    """``write(path, content)``, with a file-system failure as a GenerationError naming the file."""
    try:
        write(path, content)
    except OSError as exc:
        raise GenerationError(f"cannot write {path}: {exc.strerror or exc}") from None


def _class_names(metadata: dict, c_dim: int) -> list[str] | None:
    names = metadata.get("class_names")
    if isinstance(names, list) and len(names) == c_dim and all(isinstance(n, str) for n in names):
        return names
    return None


def _network_os_error(path: str, exc: OSError) -> GenerationError:
    """A wrong ``--network`` path names the option; an unreadable file is a file-system failure."""
    if isinstance(exc, FileNotFoundError):
        return GenerationError(f"network file not found: {path}", param="network")
    if isinstance(exc, IsADirectoryError):
        return GenerationError(f"{path}: is a folder, not a network file", param="network")
    return GenerationError(f"{path}: cannot read network file: {exc.strerror or exc}")


def load_network_file(path: str, device: torch.device) -> _checkpoint.Checkpoint:
    """Load a native snapshot or an upstream ``.pkl`` (safely); any failure is a one-line GenerationError."""
    try:
        return _checkpoint.load_checkpoint(path, device)
    except OSError as exc:
        raise _network_os_error(path, exc) from None
    except (_checkpoint.CheckpointError, _legacy_pickle.LegacyPickleError) as exc:
        raise GenerationError(str(exc), param="network") from exc


def generate_images(
    network: str | os.PathLike[str],
    seeds: Sequence[int],
    outdir: str | os.PathLike[str],
    *,
    class_idx: int | None = None,
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = True,
    compile_networks: bool = False,
) -> GenerationResult:
    """Load ``network`` (native checkpoint or upstream ``.pkl``), write ``seed%04d.png`` per seed and
    ``manifest.json`` into ``outdir`` (created if needed). Existing files of the same names are
    replaced (atomically). ``compile_networks``: run the synthesis network through ``torch.compile``
    (eager, with a message, where that is unavailable; see :mod:`stylegan2_ada.compile`).

    Raises:
        GenerationError: with ``param`` naming the option at fault (missing/damaged/unsafe network file,
            class problems, bad device, non-finite truncation, ...), or ``param=None`` for file-system
            failures (network file unreadable, output folder not creatable or not writable).
    """
    from tqdm import tqdm

    seeds = list(seeds)
    if not seeds:
        raise GenerationError("no seeds given", param="seeds")
    if any(not isinstance(s, int) or s < 0 or s > MAX_SEED for s in seeds):
        raise GenerationError(f"seeds must be integers in [0, {MAX_SEED}]", param="seeds")
    if noise_mode not in NOISE_MODES:
        raise GenerationError(
            f"noise mode must be one of {', '.join(NOISE_MODES)}; got {noise_mode!r}", param="noise-mode"
        )
    if batch_size < 1:
        raise GenerationError(f"batch size must be at least 1; got {batch_size}", param="batch")
    truncation_psi = check_truncation_psi(truncation_psi)
    device = resolve_device(device)
    network_path = os.path.abspath(os.fspath(network))

    try:
        network_sha256 = _checkpoint.sha256_file(network_path)
    except OSError as exc:
        raise _network_os_error(network_path, exc) from None
    loaded = load_network_file(network_path, device)
    key, G = select_generator(loaded.networks)
    c_dim, img_channels = int(G.c_dim), int(G.img_channels)
    if img_channels not in (1, 3):
        raise GenerationError(
            f"{network_path}: {img_channels}-channel images cannot be saved as PNG (1 or 3 only)",
            param="network",
        )
    class_names = _class_names(loaded.metadata, c_dim)
    label = class_label(c_dim, class_idx, class_names)
    synthesis, compile_report = maybe_compile(
        G.synthesis, enabled=compile_networks, name="G.synthesis", device=device
    )

    out = prepare_outdir(outdir)

    files: dict[int, Path] = {}
    with tqdm(total=len(seeds), unit="img", desc="Generating", disable=not progress) as bar:
        for seed, image in synthesize(
            G,
            seeds,
            label,
            truncation_psi=truncation_psi,
            noise_mode=noise_mode,
            batch_size=batch_size,
            device=device,
            synthesis=synthesis,
        ):
            path = out / f"seed{seed:04d}.png"
            _write_output(write_png_atomic, path, image)
            files[seed] = path
            bar.update(1)

    manifest = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "network": {
            "file": os.path.basename(network_path),  # not the folders: user names, sites
            "sha256": network_sha256,
            "format": loaded.format,
            "generator": key,
            "resolution": int(G.img_resolution),
            "channels": img_channels,
            "c_dim": c_dim,
        },
        "seeds": seeds,
        "class": class_idx,
        "class_name": class_names[class_idx] if class_names is not None and class_idx is not None else None,
        "truncation_psi": truncation_psi,
        "noise_mode": noise_mode,
        "noise_seeding": _NOISE_SEEDING_DOC,
        "latents": "numpy.random.RandomState(seed).randn(1, z_dim)",
        "batch_size": batch_size,
        "device": str(device),
        "precision": "float32" if device.type == "cpu" else "network default",
        "compile": compile_report.summary(),
        "image_mode": "L" if img_channels == 1 else "RGB",
        "versions": {
            "stylegan2_ada": _checkpoint.package_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "images": [{"seed": seed, "file": path.name} for seed, path in files.items()],
    }
    manifest_path = out / MANIFEST_NAME
    _write_output(write_json_atomic, manifest_path, manifest)
    return GenerationResult(files=files, manifest_path=manifest_path, manifest=manifest)
