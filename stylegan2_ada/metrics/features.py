"""Features of real and generated images for the metrics, and the cache of the real ones.

Work is cut into blocks of :data:`BLOCK` consecutive images; with several processes (``torchrun``) block
``b`` belongs to rank ``b % world_size`` and the blocks are gathered in order afterwards, so the result does
not depend on the number of processes or the batch size.

Generated images
    Image ``i`` of block ``b`` has the latent ``z = numpy.random.default_rng([seed, b]).standard_normal(
    (BLOCK, z_dim))[i]``; its label comes from a :class:`FakeLabels` plan; the synthesis noise is random
    (``noise_mode='random'``, as upstream evaluates) from ``torch.manual_seed`` derived from ``(seed, b)``
    inside ``torch.random.fork_rng`` (the caller's RNG is untouched); truncation psi 1. Pixels are
    converted as for saved images, ``(x * 127.5 + 128).clamp(0, 255)`` to uint8. So every snapshot of a
    run is measured on the same latents and noise.

Real images: the cache
    Features (float32 ``[N, F]``) and labels (float32 ``[N, L]``) of every item of the dataset (mirrored
    items included) are stored in ``CACHE_DIR/<dataset>-<extractor>-<key>.safetensors``, written atomically.
    ``key`` hashes a document of: the cache format, the extractor's ``content_hash`` and the dataset's
    fingerprint (:func:`dataset_fingerprint`: its options and content). The document is stored in the file
    and compared on reading; a file that does not match or cannot be read is recomputed (and replaced),
    never used. Not in the key: the device and batch size (they change features only by float rounding).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from stylegan2_ada.atomic import atomic_path
from stylegan2_ada.metrics.extractors import FeatureExtractor
from stylegan2_ada.training.distributed import DistInfo, all_gather_objects

__all__ = [
    "BLOCK",
    "CACHE_FORMAT",
    "FakeLabels",
    "MetricError",
    "FeatureSet",
    "dataset_fingerprint",
    "generated_features",
    "real_features",
]

BLOCK = 256
CACHE_FORMAT = "stylegan2_ada-real-features/1"
_META_KEY = "stylegan2_ada_metrics"


class MetricError(ValueError):
    """A metric cannot be computed for these inputs; the message says why (and what to change)."""


@dataclass
class FeatureSet:
    """``features`` float32 ``[N, F]`` and the images' labels float32 ``[N, L]`` (``L = 0`` without labels),
    on the CPU."""

    features: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def classes(self) -> np.ndarray | None:
        """int64 ``[N]`` class indices when every label is one-hot, else ``None``."""
        lab = self.labels
        if lab.shape[1] == 0:
            return None
        one_hot = ((lab == 0) | (lab == 1)).all(dim=1) & (lab.sum(dim=1) == 1)
        return lab.argmax(dim=1).numpy() if bool(one_hot.all()) else None


# ----------------------------------------------------------------------------------------------------
# Blocks and ranks.


def _block_range(b: int, n: int) -> range:
    return range(b * BLOCK, min((b + 1) * BLOCK, n))


def _my_blocks(n: int, info: DistInfo) -> list[int]:
    return list(range(info.rank, math.ceil(n / BLOCK), info.world_size))


def _gather_blocks(local: torch.Tensor, n: int, info: DistInfo) -> torch.Tensor:
    """Rows of this rank's blocks ``[m, D]`` -> all ``n`` rows in block order (every rank gets them)."""
    if not info.enabled:
        return local
    import torch.distributed as tdist

    nblocks = math.ceil(n / BLOCK)
    per_rank = math.ceil(nblocks / info.world_size) * BLOCK
    padded = torch.zeros([per_rank, local.shape[1]], dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    tdist.all_gather(parts, padded)
    rows = []
    for b in range(nblocks):
        start = (b // info.world_size) * BLOCK
        rows.append(parts[b % info.world_size][start : start + len(_block_range(b, n))])
    return torch.cat(rows)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)


def _extract(
    extractor: FeatureExtractor, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], bar: Any, scale: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    feats, labels = [], []
    for images, label in batches:
        out = extractor(images)
        if out.ndim != 2 or out.shape[0] != images.shape[0] or out.shape[1] != extractor.feature_dim:
            raise MetricError(
                f"feature extractor {extractor.name!r} returned {tuple(out.shape)} for {images.shape[0]} images "
                f"(expected [{images.shape[0]}, {extractor.feature_dim}]: feature_dim must not depend on the image size)"
            )
        feats.append(out.to(torch.float32))
        labels.append(label.to(out.device, torch.float32))
        bar.update(images.shape[0] * scale)
    return feats, labels


def _collect(
    feats: list[torch.Tensor],
    labels: list[torch.Tensor],
    n: int,
    info: DistInfo,
    dims: tuple[int, int],
    device: torch.device,
) -> FeatureSet:
    f_dim, l_dim = dims
    if feats:
        local = torch.cat([torch.cat(feats), torch.cat(labels)], dim=1)
    else:
        local = torch.zeros([0, f_dim + l_dim], device=device)
    rows = _gather_blocks(local, n, info).cpu()
    return FeatureSet(features=rows[:, :f_dim].contiguous(), labels=rows[:, f_dim:].contiguous())


# ----------------------------------------------------------------------------------------------------
# Dataset fingerprint.


def _sha256_lines(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def _image_dataset_fingerprint(ds: Any) -> dict[str, Any]:
    from stylegan2_ada.dataset import LABELS_FILE

    rels = [ds.relpath(i) for i in range(ds.num_images)]
    if ds.use_labels:
        rels.append(LABELS_FILE)
    if os.path.isdir(ds.path):  # each file's size and modification time (ns)

        def stat(rel: str) -> str:
            st = os.stat(os.path.join(ds.path, *rel.split("/")))
            return f"{rel}\t{st.st_size}\t{st.st_mtime_ns}"

        kind, lines = "image-folder", (stat(rel) for rel in rels)
    else:  # each member's CRC-32 and size: the zip's own record of the content
        with zipfile.ZipFile(ds.path) as z:
            infos = {i.filename: i for i in z.infolist()}
        kind, lines = "image-zip", (f"{r}\t{infos[r].CRC:08x}\t{infos[r].file_size}" for r in rels)
    return {
        "kind": kind,
        "files": _sha256_lines(lines),
        "items": len(ds),
        "image_shape": list(ds.image_shape),
        "options": {k: v for k, v in ds.init_kwargs.items() if k != "path"},
    }


def _content_fingerprint(ds: Any, progress: bool) -> dict[str, Any]:
    h = hashlib.sha256()
    with _progress(len(ds), "Fingerprinting dataset", progress) as bar:
        for i in range(len(ds)):
            image, label = ds[i]
            for arr in (np.ascontiguousarray(image), np.ascontiguousarray(label, dtype=np.float32)):
                h.update(repr((arr.dtype.str, arr.shape)).encode())
                h.update(arr.tobytes())
            bar.update(1)
    return {"kind": "content", "sha256": h.hexdigest(), "items": len(ds)}


def dataset_fingerprint(dataset: Any, *, progress: bool = False) -> dict[str, Any]:
    """A JSON-able document that changes whenever the dataset's items could change.

    * A dataset with a ``fingerprint()`` method (any JSON-able value; the protocol for plugin datasets
      that know their content): that value.
    * :class:`stylegan2_ada.dataset.ImageDataset`: the dataset's options (labels, mirroring, subset and
      its seed) and the list of the files in use with, for a folder, each file's size and modification
      time in nanoseconds and, for a zip, each member's CRC-32 and size (and the same for
      ``dataset.json`` when labels are used).
    * Anything else: a SHA-256 over every item's pixels and label (reads the whole dataset).
    """
    from stylegan2_ada.dataset import ImageDataset

    custom = getattr(dataset, "fingerprint", None)
    if callable(custom):
        return {"kind": "custom", "value": custom()}
    if isinstance(dataset, ImageDataset):
        return _image_dataset_fingerprint(dataset)
    return _content_fingerprint(dataset, progress)


# ----------------------------------------------------------------------------------------------------
# Real images.


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60] or "x"


def _read_cache(path: str, key_doc: dict[str, Any]) -> FeatureSet | None:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            stored = json.loads((f.metadata() or {}).get(_META_KEY, "null"))
            if stored != key_doc:
                return None
            fs = FeatureSet(features=f.get_tensor("features"), labels=f.get_tensor("labels"))
    except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never trusted
        return None
    ok = fs.features.ndim == 2 and fs.labels.ndim == 2 and fs.features.shape[0] == fs.labels.shape[0]
    return fs if ok and fs.features.dtype == torch.float32 else None


def _write_cache(path: str, key_doc: dict[str, Any], fs: FeatureSet) -> None:
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(
            {"features": fs.features.contiguous(), "labels": fs.labels.contiguous()},
            tmp,
            metadata={_META_KEY: json.dumps(key_doc, sort_keys=True)},
        )


def _dataset_batches(
    dataset: Any, indices: list[int], batch_size: int, workers: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=workers
    )
    for images, labels in loader:
        yield images, labels.reshape(images.shape[0], -1)


def real_features(
    dataset: Any,
    extractor: FeatureExtractor,
    *,
    cache_dir: str | os.PathLike[str] | None,
    batch_size: int = 64,
    workers: int = 0,
    info: DistInfo | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[FeatureSet | None, dict[str, Any]]:
    """Features of every item of ``dataset``, from the cache when it holds them (see the module docstring).

    Every rank must call this together. Returns ``(features, meta)`` on rank 0 and ``(None, meta)`` on the
    others; ``meta`` says ``cache_file`` (``None`` without ``cache_dir``) and whether it was ``cached``.
    """
    info = info or DistInfo()
    n = len(dataset)
    path, key_doc, hit = None, None, None
    if info.is_main and cache_dir is not None:
        key_text = json.dumps(
            {
                "format": CACHE_FORMAT,
                "extractor": extractor.content_hash,
                "extractor_name": extractor.name,
                "dataset": dataset_fingerprint(dataset, progress=progress),
            },
            sort_keys=True,
        )
        key_doc = json.loads(key_text)  # as it reads back from the file (tuples become lists)
        key = hashlib.sha256(key_text.encode()).hexdigest()[:24]
        name = f"{_safe_name(getattr(dataset, 'name', 'dataset'))}-{_safe_name(extractor.name)}-{key}.safetensors"
        path = os.path.join(os.fspath(cache_dir), name)
        hit = _read_cache(path, key_doc) if os.path.isfile(path) else None
        if hit is not None and len(hit) != n:
            hit = None
    cached = bool(all_gather_objects(hit is not None, info)[0])
    meta = {"cache_file": path, "cached": cached}
    if cached:
        log(f"Real-image features from the cache: {path}")
        return hit, meta
    blocks = _my_blocks(n, info)
    indices = [i for b in blocks for i in _block_range(b, n)]
    device = getattr(extractor, "device", torch.device("cpu"))
    with _progress(n, f"Features of {n} real images", progress and info.is_main) as bar:
        feats, labels = _extract(
            extractor, _dataset_batches(dataset, indices, batch_size, workers), bar, info.world_size
        )
    label_dim = int(labels[0].shape[1]) if labels else int(np.asarray(dataset[0][1]).size)
    fs = _collect(feats, labels, n, info, (extractor.feature_dim, label_dim), device)
    if not info.is_main:
        return None, meta
    if path is not None:
        try:
            _write_cache(path, key_doc, fs)
            log(f"Cached real-image features: {path}")
        except OSError as exc:  # the metric is still right; only the next run is slower
            log(f"Warning: could not write the feature cache {path}: {exc}")
    return fs, meta


# ----------------------------------------------------------------------------------------------------
# Generated images.


@dataclass(frozen=True)
class FakeLabels:
    """The conditioning labels of generated image ``i``.

    * ``c_dim == 0``: none (unconditional generator).
    * ``balanced_classes = (k0, k1, ...)``: one-hot class ``balanced_classes[i % K]`` (equal counts per class).
    * ``fixed_class = k``: one-hot class ``k`` for every image.
    * ``pool``: float32 ``[M, c_dim]``: a row drawn uniformly at random (the dataset's own labels, as
      upstream samples them for label vectors that are not classes).
    """

    c_dim: int
    balanced_classes: tuple[int, ...] | None = None
    fixed_class: int | None = None
    pool: np.ndarray | None = None

    def __call__(self, indices: range, rng: np.random.Generator) -> np.ndarray:
        count = len(indices)
        if self.c_dim == 0:
            return np.zeros([count, 0], dtype=np.float32)
        if self.pool is not None:
            return self.pool[rng.integers(0, len(self.pool), size=count)].astype(np.float32)
        if self.fixed_class is not None:
            classes = np.full(count, self.fixed_class)
        elif self.balanced_classes is not None:
            classes = np.asarray(self.balanced_classes)[np.asarray(indices) % len(self.balanced_classes)]
        else:
            raise ValueError(
                "a conditional generator needs a label plan (balanced_classes, fixed_class or pool)"
            )
        return np.eye(self.c_dim, dtype=np.float32)[classes]


def _uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in about [-1, 1] -> uint8, with the rounding of saved images (kept on the device)."""
    return (images.to(torch.float32) * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def _generated_batches(
    G: nn.Module,
    blocks: list[int],
    n: int,
    labels: FakeLabels,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    cuda = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    for b in blocks:
        rows = _block_range(b, n)
        rng = np.random.default_rng([seed, b])
        z_all = rng.standard_normal((BLOCK, G.z_dim))[: len(rows)]  # the same z whatever the block length
        c_all = labels(rows, rng)
        noise_seed = int(np.random.SeedSequence([seed, b, 1]).generate_state(1)[0])
        with torch.random.fork_rng(devices=cuda, device_type="cuda"):
            torch.manual_seed(noise_seed)
            for s in range(0, len(rows), batch_size):
                z = torch.from_numpy(z_all[s : s + batch_size]).to(device, torch.float32)
                c = torch.from_numpy(c_all[s : s + batch_size]).to(device)
                images = G(z, c, noise_mode="random", force_fp32=device.type == "cpu")
                yield _uint8(images), c


@torch.no_grad()
def generated_features(
    G: nn.Module,
    extractor: FeatureExtractor,
    *,
    num: int,
    labels: FakeLabels,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    info: DistInfo | None = None,
    progress: bool = True,
) -> FeatureSet | None:
    """Features of ``num`` images of ``G`` (already on ``device``); see the module docstring for how they are
    drawn. Every rank must call this together; rank 0 gets the :class:`FeatureSet`, the others ``None``."""
    info = info or DistInfo()
    device = torch.device(device)
    blocks = _my_blocks(num, info)
    with _progress(num, f"Features of {num} generated images", progress and info.is_main) as bar:
        feats, labs = _extract(
            extractor,
            _generated_batches(G, blocks, num, labels, seed, batch_size, device),
            bar,
            info.world_size,
        )
    fs = _collect(feats, labs, num, info, (extractor.feature_dim, labels.c_dim), device)
    return fs if info.is_main else None
