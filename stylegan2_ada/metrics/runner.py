"""Evaluate a generator against a dataset: upstream's metric names, one call for all of them, JSON lines.

Metrics (upstream's names; ``--num`` / ``num_gen`` replaces the number of generated images of every one)

=============== ===== ============== ========================= =====================================
name            kind  generated      reals used                result keys
=============== ===== ============== ========================= =====================================
``fid50k_full`` FID   50 000         all                       ``fid50k_full``
``kid50k_full`` KID   50 000         up to 1 000 000           ``kid50k_full``
``pr50k3_full`` P/R   50 000         up to 200 000             ``pr50k3_full_precision``, ``_recall``
``fid50k``      FID   50 000         up to 50 000              ``fid50k``
``kid50k``      KID   50 000         up to 50 000              ``kid50k``
``pr50k3``      P/R   50 000         up to 50 000              ``pr50k3_precision``, ``_recall``
=============== ===== ============== ========================= =====================================

KID uses 100 subsets of at most 1000 images; precision/recall k = 3 (see :mod:`.statistics`). When a
metric uses fewer reals than the dataset has, it takes a random subset (seeded, the same every time).
The generated images are drawn once, for the largest count asked for, and each metric uses the first
``num_gen`` of them (see :mod:`.features` for how they are drawn).

Conditional generators (labels one-hot classes)
    * without a class: the generated labels cycle over the classes present in the dataset (equal counts
      per class). Each metric is computed per class (that class's reals against that class's generated
      images; keys suffixed ``_class<k>``) and the main key holds the **class-balanced overall** value: the
      unweighted mean over the classes, so a rare class counts as much as a common one.
    * with ``class_idx = k``: that class only, its reals against ``num_gen`` images of class ``k``.
    * labels that are not one-hot (float vectors): the generated labels are drawn from the dataset's own
      labels (as upstream) and everything is pooled.

The result of one metric (a dict, as written to ``metric-<name>.jsonl`` by :func:`append_metric_jsonl`)::

    {"results": {...}, "metric": name, "total_time": s, "total_time_str": "1m 02s", "num_gpus": W,
     "snapshot_pkl": file name, "timestamp": unix time, "kimg": k,            (added when written)
     "num_gen": n, "num_real": n, "class": k or null, "classes": [..] or null,
     "feature_time": s, "stats_time": s, "real_features": {"cache_file", "cached"}, "detector": {...}}

``total_time`` is the feature extraction shared by all the metrics of the call plus the metric's own
statistics time.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stylegan2_ada import devices
from stylegan2_ada.atomic import atomic_write
from stylegan2_ada.metrics import statistics as st
from stylegan2_ada.metrics.extractors import FeatureExtractor
from stylegan2_ada.metrics.features import (
    FakeLabels,
    FeatureSet,
    MetricError,
    generated_features,
    real_features,
)
from stylegan2_ada.training.distributed import DistInfo, all_gather_objects

__all__ = [
    "METRICS",
    "MetricError",
    "MetricSpec",
    "append_metric_jsonl",
    "compute_metrics",
    "parse_metric_list",
]


@dataclass(frozen=True)
class MetricSpec:
    """``kind``: ``'fid'``, ``'kid'`` or ``'pr'``; ``num_gen`` generated images; ``max_real`` reals at most
    (``None``: all)."""

    name: str
    kind: str
    num_gen: int
    max_real: int | None


METRICS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("fid50k_full", "fid", 50_000, None),
        MetricSpec("kid50k_full", "kid", 50_000, 1_000_000),
        MetricSpec("pr50k3_full", "pr", 50_000, 200_000),
        MetricSpec("fid50k", "fid", 50_000, 50_000),
        MetricSpec("kid50k", "kid", 50_000, 50_000),
        MetricSpec("pr50k3", "pr", 50_000, 50_000),
    )
}


def parse_metric_list(text: str | Sequence[str]) -> list[str]:
    """``'fid50k_full,kid50k_full'`` (or a list) -> names; ``'none'`` or empty -> ``[]``. Unknown names raise
    :class:`MetricError` listing the known ones."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise MetricError(f"unknown metric {', '.join(unknown)}; known: {', '.join(METRICS)} (or none)")
    return list(dict.fromkeys(names))


def _format_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s // 60) % 60:02d}m"


# ----------------------------------------------------------------------------------------------------
# Which images are compared.


@dataclass(frozen=True)
class _Plan:
    """The generated labels and the groups compared: ``(key suffix, class or None)`` per group."""

    labels: FakeLabels
    groups: tuple[tuple[str, int | None], ...]
    class_idx: int | None


def _plan(G: nn.Module, real: FeatureSet, class_idx: int | None, where: str) -> _Plan:
    c_dim = int(G.c_dim)
    if c_dim == 0:
        if class_idx is not None:
            raise MetricError(f"a class ({class_idx}) was given, but the generator is unconditional")
        return _Plan(FakeLabels(0), (("", None),), None)
    if real.labels.shape[1] != c_dim:
        raise MetricError(
            f"the generator is conditional ({c_dim} label values) but the dataset{f' {where!r}' if where else ''} has "
            f"{real.labels.shape[1]} label values per image; a conditional generator needs the labelled dataset"
        )
    classes = real.classes()
    if classes is None:
        if class_idx is not None:
            raise MetricError(
                f"the dataset's labels are not one-hot classes, so a class ({class_idx}) cannot be chosen"
            )
        return _Plan(FakeLabels(c_dim, pool=real.labels.numpy()), (("", None),), None)
    present = sorted(int(c) for c in np.unique(classes))
    if class_idx is not None:
        if class_idx not in present:
            raise MetricError(f"class {class_idx} has no images in the dataset; classes present: {present}")
        return _Plan(FakeLabels(c_dim, fixed_class=class_idx), (("", class_idx),), class_idx)
    groups = tuple((f"_class{c}", c) for c in present)
    return _Plan(FakeLabels(c_dim, balanced_classes=tuple(present)), groups, None)


def _subset(n: int, cap: int | None, seed: int) -> np.ndarray:
    if cap is None or n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def _group_rows(fs: FeatureSet, cls: int | None) -> np.ndarray:
    if cls is None:
        return np.arange(len(fs))
    return np.flatnonzero(fs.classes() == cls)


def _statistic(spec: MetricSpec, real: torch.Tensor, fake: torch.Tensor, seed: int) -> dict[str, float]:
    if spec.kind == "fid":
        return {"": st.fid_from_features(real, fake)}
    if spec.kind == "kid":  # upstream's subsets: the defaults, 100 of at most 1000 images
        return {"": st.kernel_inception_distance(real, fake, seed=seed)}
    precision, recall = st.precision_recall(real, fake)  # k = 3, the default
    return {"_precision": precision, "_recall": recall}


def _evaluate(
    spec: MetricSpec,
    plan: _Plan,
    real: FeatureSet,
    fake: FeatureSet,
    num_gen: int,
    seed: int,
    device: torch.device,
) -> tuple[dict[str, float], int]:
    fake = FeatureSet(fake.features[:num_gen], fake.labels[:num_gen])
    per_group: dict[str, dict[str, float]] = {}
    num_real = 0
    for suffix, cls in plan.groups:
        real_rows = _group_rows(real, cls)
        real_rows = real_rows[_subset(len(real_rows), spec.max_real, seed)]
        fake_rows = _group_rows(fake, cls)
        where = f"class {cls}: " if cls is not None else ""
        try:
            values = _statistic(
                spec,
                real.features[torch.from_numpy(real_rows)].to(device),
                fake.features[torch.from_numpy(fake_rows)].to(device),
                seed,
            )
        except st.MetricInputError as exc:
            raise MetricError(
                f"{spec.name}: {where}{exc} (real images {len(real_rows)}, generated {len(fake_rows)})"
            ) from None
        per_group[suffix] = values
        num_real += len(real_rows)
    results: dict[str, float] = {}
    for part in per_group[plan.groups[0][0]]:
        results[spec.name + part] = float(np.mean([v[part] for v in per_group.values()]))
    if len(plan.groups) > 1:
        for suffix, values in per_group.items():
            for part, value in values.items():
                results[spec.name + part + suffix] = value
    return results, num_real


# ----------------------------------------------------------------------------------------------------
# The entry point.


@torch.no_grad()
def compute_metrics(
    metrics: Sequence[str],
    G: nn.Module,
    dataset: Any,
    detector: FeatureExtractor,
    *,
    num_gen: int | None = None,
    class_idx: int | None = None,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 64,
    workers: int = 0,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Compute ``metrics`` (names of :data:`METRICS`) of generator ``G`` against ``dataset``.

    Args:
        G: the generator (``G_ema`` in training), already on ``device``; it is only read (no grad, its mode
            untouched).
        dataset: items ``(uint8 [C, H, W], float32 [label_dim])`` (:class:`stylegan2_ada.dataset.ImageDataset`
            or a plugin's dataset).
        detector: a feature extractor (:func:`stylegan2_ada.metrics.extractors.load_extractor`) on ``device``.
        num_gen: generated images for every metric (default: each metric's own count, 50 000).
        class_idx: evaluate this class only (conditional generators).
        cache_dir: folder of the real-feature cache (``None``: no cache).
        rank, world_size: this process in a ``torchrun`` job. With ``world_size > 1`` every rank must call
            this at the same point (the process group must be initialised): each extracts its share of the
            features; rank 0 computes the statistics and writes the cache.
        seed: latents, noise and the random subsets of the metrics.
        log: where to say what happens (cache use); progress bars go to stderr on rank 0.

    Returns:
        On rank 0, ``{name: result}`` (see the module docstring); on other ranks ``{}``.

    Raises:
        MetricError: unknown metric, too few images for a metric, class problems, mismatched data.
    """
    names = parse_metric_list(list(metrics))
    if not names:
        return {}
    specs = [METRICS[n] for n in names]
    if num_gen is not None and num_gen < 2:
        raise MetricError(f"the number of generated images must be at least 2, got {num_gen}")
    device = devices.resolve_device(device)
    info = DistInfo(rank=rank, world_size=world_size, local_rank=rank)
    _check_shapes(G, dataset)
    start = time.time()
    real, real_meta = real_features(
        dataset,
        detector,
        cache_dir=cache_dir,
        batch_size=batch_size,
        workers=workers,
        info=info,
        progress=progress,
        log=log,
    )
    plan_or_error: Any = None
    if info.is_main:
        try:
            plan_or_error = _plan(G, real, class_idx, getattr(dataset, "name", ""))
        except MetricError as exc:
            plan_or_error = exc
    plan_or_error = all_gather_objects(plan_or_error, info)[0]
    if isinstance(plan_or_error, MetricError):
        raise plan_or_error
    plan: _Plan = plan_or_error
    counts = {s.name: num_gen or s.num_gen for s in specs}
    fake = generated_features(
        G,
        detector,
        num=max(counts.values()),
        labels=plan.labels,
        seed=seed,
        batch_size=batch_size,
        device=device,
        info=info,
        progress=progress,
    )
    feature_time = time.time() - start
    if not info.is_main:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        t0 = time.time()
        results, num_real = _evaluate(spec, plan, real, fake, counts[spec.name], seed, device)
        stats_time = time.time() - t0
        total = feature_time + stats_time
        out[spec.name] = {
            "results": results,
            "metric": spec.name,
            "total_time": total,
            "total_time_str": _format_duration(total),
            "num_gpus": world_size,
            "num_gen": counts[spec.name],
            "num_real": num_real,
            "class": plan.class_idx,
            "classes": [c for _, c in plan.groups] if len(plan.groups) > 1 else None,
            "feature_time": feature_time,
            "stats_time": stats_time,
            "real_features": real_meta,
            "detector": detector.describe(),
        }
    return out


def _check_shapes(G: nn.Module, dataset: Any) -> None:
    shape = getattr(dataset, "image_shape", None)
    if shape is None:
        return
    want = [int(G.img_channels), int(G.img_resolution), int(G.img_resolution)]
    if list(shape) != want:
        raise MetricError(
            f"the dataset's images are [C, H, W] = {list(shape)} but the generator makes {want}; "
            "compare a generator with the data it was trained on"
        )


def append_metric_jsonl(
    run_dir: str | os.PathLike[str],
    name: str,
    result: dict[str, Any],
    snapshot_pkl: str | None,
    kimg: float | None = None,
) -> Path:
    """Add one line to ``run_dir/metric-<name>.jsonl`` (upstream's file and fields, plus ours; see the
    module docstring). The file is rewritten atomically with the new line appended: readers never see a
    partial line. Returns the file's path."""
    path = Path(run_dir) / f"metric-{name}.jsonl"
    record = dict(result)
    record.update(
        snapshot_pkl=os.path.basename(snapshot_pkl) if snapshot_pkl else None,
        timestamp=time.time(),
        kimg=kimg,
    )
    line = (json.dumps(record) + "\n").encode("utf-8")
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    atomic_write(path, lambda f: f.write(old + line))
    return path
