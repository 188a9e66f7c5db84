"""Training data for the classifier: real datasets, generated images, the validation split, samples.

Real data (``--data``): folders or zips that ``train.py`` reads, opened with the core's
:func:`stylegan2_ada.dataset.open_image_dataset` with class labels from ``dataset.json``. Patient or study
ids for a grouped split: an optional ``"groups": {"relpath": id, ...}`` entry in an upstream-format
``dataset.json`` (``{"labels": [...], "class_names": [...], "groups": {...}}``); when present every image
needs one. Ids are compared as strings across all ``--data`` sources (the same patient in two sources
is one group).

Generated data (``--synthetic``): training only, never validation. A folder written by ``generate.py``
(``seed%04d.png`` + ``manifest.json`` naming the class), a folder whose subfolders are such folders
(one per class), or a folder with a ``dataset.json``. The first ``K`` images per class are used (in
manifest order, i.e. seed order, or path order for ``dataset.json``).

Validation: ``--val-data`` sources whole, or a split of the real ``--data`` images: stratified by class
(:func:`sklearn.model_selection.train_test_split`), and when groups are given stratified *and* grouped
(:class:`sklearn.model_selection.StratifiedGroupKFold` with ``round(1 / val_fraction)`` folds, first fold
held out: no group is on both sides; the fraction is then approximate). Every class must be in both parts.

Every source is fingerprinted (SHA-256 over its image paths and bytes and its ``dataset.json``), and
the summary of what was used is stored in the model file.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch.utils.data

from classification.transform import Augment, EvalTransform, images_uint8_to_float
from stylegan2_ada.checkpoint import sha256_file
from stylegan2_ada.dataset import LABELS_FILE, DatasetError, ImageDataset, open_image_dataset, open_source

__all__ = [
    "MANIFEST_NAME",
    "EpochSampler",
    "Sample",
    "SampleSet",
    "Source",
    "TrainingData",
    "pixel_statistics",
    "prepare_data",
    "split_validation",
]

MANIFEST_NAME = "manifest.json"  # what generate.py writes beside its images


class DataError(DatasetError):
    """Training data cannot be used; the message names the source and the problem."""


@dataclass(frozen=True)
class Sample:
    """One image: ``source`` (index into :attr:`TrainingData.sources`), ``index`` into its dataset."""

    source: int
    index: int
    label: int
    group: str


@dataclass
class Source:
    """One opened dataset and what it contributes. ``kind``: ``'real'`` or ``'synthetic'``; ``role``:
    ``'train+val'`` (split), ``'train'`` or ``'val'``."""

    path: str
    kind: str
    role: str
    dataset: ImageDataset
    samples: list[Sample] = field(default_factory=list)
    class_names: list[str] | None = None
    sha256: str = ""  # :func:`fingerprint`, set by prepare_data

    def summary(self, class_names: Sequence[str]) -> dict[str, Any]:
        counts = Counter(s.label for s in self.samples)
        return {
            "path": self.path,
            "kind": self.kind,
            "role": self.role,
            "format": "zip" if os.path.isfile(self.path) else "folder",
            "images_used": len(self.samples),
            "images_in_source": self.dataset.num_images,
            "class_counts": {class_names[c]: counts.get(c, 0) for c in range(len(class_names))},
            "sha256": self.sha256,
        }


@dataclass
class TrainingData:
    sources: list[Source]
    train: list[Sample]
    val: list[Sample]
    class_names: list[str]
    split: dict[str, Any]

    def counts(self, samples: Sequence[Sample]) -> dict[str, int]:
        counts = Counter(s.label for s in samples)
        return {name: counts.get(c, 0) for c, name in enumerate(self.class_names)}

    def summary(self) -> dict[str, Any]:
        """JSON-able: sources with fingerprints, per-class counts of each part, the split."""
        return {
            "sources": [s.summary(self.class_names) for s in self.sources],
            "train_counts": self.counts(self.train),
            "train_synthetic_counts": self.counts(
                [s for s in self.train if self.sources[s.source].kind == "synthetic"]
            ),
            "val_counts": self.counts(self.val),
            "split": self.split,
        }


def fingerprint(dataset: ImageDataset) -> str:
    """SHA-256 of a dataset's content: of the zip file, or over ``path \\0 sha256(bytes) \\n`` of every
    image and ``dataset.json`` of a folder (independent of the folder's location)."""
    if os.path.isfile(dataset.path):
        return sha256_file(dataset.path)
    source = open_source(dataset.path)
    digest = hashlib.sha256()
    rels = sorted({dataset.relpath(i) for i in range(dataset.num_images)})
    for rel in [*rels, LABELS_FILE] if source.exists(LABELS_FILE) else rels:
        digest.update(f"{rel}\0{hashlib.sha256(source.read_bytes(rel)).hexdigest()}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Opening sources.


def _read_json(dataset_path: str, name: str) -> Any | None:
    source = open_source(dataset_path)
    try:
        if not source.exists(name):
            return None
        where = source.display(name)
        try:
            return json.loads(source.read_bytes(name).decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{where}: not valid JSON: {exc}") from None
    finally:
        source.close()


def _normalize(rel: str) -> str:
    rel = posixpath.normpath(rel.replace("\\", "/"))
    return rel[2:] if rel.startswith("./") else rel


def _group_ids(path: str) -> dict[str, str] | None:
    """``dataset.json``'s ``"groups"`` (relpath -> id as a string), checked before the core parses the
    labels (in the flat format it would be taken for an image path); ``None`` without groups."""
    doc = _read_json(path, LABELS_FILE)
    if not isinstance(doc, dict) or "groups" not in doc:
        return None
    where = os.path.join(path, LABELS_FILE)
    if "labels" not in doc:
        raise DataError(
            f'{where}: "groups" needs the upstream format {{"labels": [[path, label], ...], "groups": {{...}}}}; '
            "in the flat format every key is an image path"
        )
    raw = doc["groups"]
    if not isinstance(raw, dict) or not all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in raw.values()
    ):
        raise DataError(f'{where}: "groups" must map image paths to string or integer ids')
    return {_normalize(k): str(v) for k, v in raw.items()}


def _item_groups(path: str, groups: dict[str, str], dataset: ImageDataset) -> list[str]:
    """The group id of each item of ``dataset``; every image needs one."""
    rels = [dataset.relpath(i) for i in range(len(dataset))]
    missing = [r for r in rels if r not in groups]
    if missing:
        raise DataError(
            f'{os.path.join(path, LABELS_FILE)}: "groups" has no id for {len(missing)} of {len(rels)} images '
            f"(e.g. {', '.join(missing[:3])}); every image needs one when groups are given"
        )
    return [groups[r] for r in rels]


def _open_labelled(path: str) -> ImageDataset:
    dataset = open_image_dataset(path, use_labels=True)
    raw = dataset.raw_labels
    if raw is None or raw.ndim != 1:
        raise DataError(f"{path}: needs integer class labels in {LABELS_FILE} (found float vector labels)")
    return dataset


def _open_real(path: str, role: str, index: int) -> Source:
    group_ids = _group_ids(path)
    dataset = _open_labelled(path)
    groups = _item_groups(path, group_ids, dataset) if group_ids is not None else None
    labels = dataset.raw_labels
    assert labels is not None
    samples = [
        Sample(index, i, int(labels[i]), groups[i] if groups is not None else f"{index}:{i}")
        for i in range(len(dataset))
    ]
    return Source(os.path.abspath(path), "real", role, dataset, samples, dataset.class_names)


def _generated_folders(path: str) -> list[str]:
    """``path`` itself when it has a manifest or dataset.json, else its subfolders that do."""

    def usable(folder: str) -> bool:
        return any(os.path.isfile(os.path.join(folder, n)) for n in (MANIFEST_NAME, LABELS_FILE))

    if os.path.isfile(path) or usable(path):
        return [path]
    if not os.path.isdir(path):
        raise DataError(f"{path}: no such folder")
    subs = sorted(os.path.join(path, n) for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))
    found = [s for s in subs if usable(s)]
    if not found:
        raise DataError(
            f"{path}: no {MANIFEST_NAME} (written by generate.py) or {LABELS_FILE}, neither here nor in a subfolder"
        )
    return found


def _open_generated(folder: str, index: int) -> tuple[Source, list[str] | None]:
    """A generated folder as a source whose samples are in "first K" order; also its class names."""
    if os.path.isfile(folder) or os.path.isfile(os.path.join(folder, LABELS_FILE)):
        source = _open_real(folder, "train", index)
        source.kind = "synthetic"
        source.samples.sort(key=lambda s: source.dataset.relpath(s.index))
        return source, source.class_names
    manifest = _read_json(folder, MANIFEST_NAME)
    where = os.path.join(folder, MANIFEST_NAME)
    cls = manifest.get("class") if isinstance(manifest, dict) else None
    if not isinstance(cls, int) or isinstance(cls, bool) or cls < 0:
        raise DataError(f'{where}: needs a "class" index (generate.py --class K), got {cls!r}')
    images = manifest.get("images")
    if not isinstance(images, list) or not all(
        isinstance(e, dict) and isinstance(e.get("file"), str) for e in images
    ):
        raise DataError(f'{where}: "images" must list {{"seed": ..., "file": ...}} entries')
    dataset = open_image_dataset(folder, use_labels=False)
    position = {dataset.relpath(i): i for i in range(len(dataset))}
    missing = [e["file"] for e in images if _normalize(e["file"]) not in position]
    if missing:
        raise DataError(
            f"{where}: lists {len(missing)} images that are not in the folder (e.g. {missing[0]})"
        )
    samples = [Sample(index, position[_normalize(e["file"])], cls, f"{index}:{e['file']}") for e in images]
    names = None
    c_dim = manifest.get("network", {}).get("c_dim") if isinstance(manifest.get("network"), dict) else None
    name = manifest.get("class_name")
    if isinstance(name, str) and isinstance(c_dim, int) and c_dim > cls:
        names = [None] * c_dim
        names[cls] = name
    return Source(os.path.abspath(folder), "synthetic", "train", dataset, samples), names


def _class_names(
    sources: Sequence[Source], named: Sequence[tuple[str, Sequence[str | None] | None]]
) -> list[str]:
    """One list of class names for all sources (index -> name; ``"0"``, ``"1"``, ... where no source names
    a class); :class:`DataError` when two sources give one index different names."""
    num = max(
        [
            max((s.label for src in sources for s in src.samples), default=-1) + 1,
            *(len(g or []) for _, g in named),
        ]
    )
    names: list[str | None] = [None] * num
    origin: list[str] = [""] * num
    for path, given in named:
        for c, name in enumerate(given or []):
            if name is None:
                continue
            if names[c] is not None and names[c] != name:
                raise DataError(
                    f"class {c} is called {names[c]!r} in {origin[c]} but {name!r} in {path}; "
                    "the sources must use the same class indices and names"
                )
            names[c], origin[c] = name, path
    return [n if n is not None else str(c) for c, n in enumerate(names)]


# --------------------------------------------------------------------------------------------------
# The split.


def split_validation(
    labels: np.ndarray, groups: Sequence[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(train_idx, val_idx, description)`` for samples with ``labels [N]`` and ``groups [N]``.

    Stratified by label; when some group holds more than one sample, also grouped (no group on both
    sides) with :class:`~sklearn.model_selection.StratifiedGroupKFold`. Seeded by ``seed``.
    """
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    if not 0 < val_fraction < 1:
        raise ValueError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    labels = np.asarray(labels)
    counts = Counter(labels.tolist())
    rare = sorted(c for c, n in counts.items() if n < 2)
    if rare:
        raise DataError(
            f"class(es) {rare} have fewer than 2 real images: cannot put them in both training and validation"
        )
    codes = np.unique(np.asarray(groups), return_inverse=True)[1]
    index = np.arange(len(labels))
    if len(np.unique(codes)) == len(labels):
        train, val = train_test_split(index, test_size=val_fraction, stratify=labels, random_state=seed)
        how = {"method": "stratified", "val_fraction": val_fraction}
    else:
        folds = max(2, round(1 / val_fraction))
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        try:
            train, val = next(splitter.split(index, labels, codes))
        except ValueError as exc:
            raise DataError(f"cannot make a grouped validation split: {exc}") from None
        how = {
            "method": "stratified-grouped",
            "val_fraction": val_fraction,
            "folds": folds,
            "groups": int(codes.max()) + 1,
        }
    missing = sorted(set(counts) - set(labels[val].tolist())) + sorted(
        set(counts) - set(labels[train].tolist())
    )
    if missing:
        raise DataError(
            f"the validation split leaves class(es) {sorted(set(missing))} out of one part "
            f"(too few images or groups); use --val-fraction larger or --val-data"
        )
    return np.sort(train), np.sort(val), {**how, "seed": seed}


def prepare_data(
    data: Sequence[str],
    *,
    val_data: Sequence[str] = (),
    synthetic: Sequence[str] = (),
    synthetic_per_class: int | None = None,
    val_fraction: float = 0.15,
    seed: int = 0,
) -> TrainingData:
    """Open every source and make the train / validation samples (module docstring)."""
    if not data and not synthetic:
        raise DataError("no training data: give --data (real images) and/or --synthetic")
    if not data and not val_data:
        raise DataError("no validation data: give --data (split) or --val-data (real images, held out)")
    sources: list[Source] = []
    named: list[tuple[str, Sequence[str | None] | None]] = []
    for path in data:
        src = _open_real(path, "train" if val_data else "train+val", len(sources))
        sources.append(src)
        named.append((src.path, src.class_names))
    for path in val_data:
        src = _open_real(path, "val", len(sources))
        sources.append(src)
        named.append((src.path, src.class_names))
    for path in synthetic:
        for folder in _generated_folders(path):
            src, names = _open_generated(folder, len(sources))
            sources.append(src)
            named.append((src.path, names))
    for src in sources:
        src.sha256 = fingerprint(src.dataset)
    held_out = {src.sha256: src.path for src in sources if src.role == "val"}
    for src in sources:
        if src.role != "val" and src.sha256 in held_out:
            raise DataError(
                f"{src.path} and the validation data {held_out[src.sha256]} have the same content"
            )
    class_names = _class_names(sources, named)
    if len(class_names) < 2:
        raise DataError("the data has only one class; a classifier needs at least two")

    real = [s for src in sources if src.role != "val" and src.kind == "real" for s in src.samples]
    if val_data:
        train = real
        val = [s for src in sources if src.role == "val" for s in src.samples]
        split = {"method": "given", "val_sources": [os.path.abspath(p) for p in val_data]}
    else:
        labels = np.array([s.label for s in real], dtype=np.int64)
        train_idx, val_idx, split = split_validation(labels, [s.group for s in real], val_fraction, seed)
        train, val = [real[i] for i in train_idx], [real[i] for i in val_idx]
    if synthetic:
        train = train + _first_per_class(sources, synthetic_per_class)
        split["synthetic_per_class"] = synthetic_per_class
    used = {(s.source, s.index) for s in (*train, *val)}
    for src in sources:  # keep only what is used, for the summary
        src.samples = [s for s in src.samples if (s.source, s.index) in used]
    present = {s.label for s in train}
    absent = [class_names[c] for c in range(len(class_names)) if c not in present]
    if absent:
        raise DataError(f"no training images of class(es) {', '.join(absent)}")
    absent = [class_names[c] for c in range(len(class_names)) if c not in {s.label for s in val}]
    if absent:
        raise DataError(
            f"no validation images of class(es) {', '.join(absent)}: the validation AUC needs every class"
        )
    return TrainingData(sources, train, val, class_names, split)


def _first_per_class(sources: Sequence[Source], per_class: int | None) -> list[Sample]:
    taken: Counter[int] = Counter()
    chosen = []
    for src in sources:
        if src.kind != "synthetic":
            continue
        for s in src.samples:
            if per_class is None or taken[s.label] < per_class:
                chosen.append(s)
                taken[s.label] += 1
    return chosen


# --------------------------------------------------------------------------------------------------
# Feeding the network.


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(position, augment_seed)`` for each of ``n`` samples: shuffled per epoch (or in order),
    both from ``(seed, epoch)`` only, so runs repeat exactly whatever the number of loader workers.
    Call :meth:`set_epoch` before each epoch (also works with persistent workers: the sampler lives in
    the main process)."""

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        seeds = rng.integers(0, 2**62, size=self.n)
        return iter(zip(order.tolist(), seeds.tolist()))


class SampleSet(torch.utils.data.Dataset):
    """``self[(position, seed)]`` -> ``(x [in_channels, S, S] float32, label int64)``: the image of
    ``samples[position]``, augmented with ``seed`` when ``augment`` is given, then the eval transform."""

    def __init__(
        self,
        sources: Sequence[Source],
        samples: Sequence[Sample],
        transform: EvalTransform,
        augment: Augment | None,
    ) -> None:
        self.datasets = [s.dataset for s in sources]
        self.samples = list(samples)
        self.transform = transform
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        position, seed = key
        sample = self.samples[position]
        image = torch.from_numpy(self.datasets[sample.source].load_image(sample.index))  # uint8 [C, H, W]
        x = images_uint8_to_float(image).add(1).div(2)  # [C, H, W] in [0, 1]
        if self.augment is not None:
            x = self.augment(x, seed)
        return self.transform.from_unit(x[None])[0], sample.label


def pixel_statistics(
    sources: Sequence[Source], samples: Sequence[Sample], in_channels: int, *, limit: int = 512, seed: int = 0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of [0, 1] pixel values over at most ``limit`` of ``samples`` (a seeded
    random subset), after the channel rule of the eval transform (1 -> 3 replicated, 3 -> 1 averaged)."""
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(samples))[:limit]
    total = np.zeros(in_channels)
    total_sq = np.zeros(in_channels)
    count = 0
    for i in chosen:
        s = samples[i]
        x = sources[s.source].dataset.load_image(s.index).astype(np.float64) / 255  # [C, H, W]
        if x.shape[0] != in_channels:
            x = np.repeat(x, 3, axis=0) if in_channels == 3 else x.mean(axis=0, keepdims=True)
        total += x.sum(axis=(1, 2))
        total_sq += (x**2).sum(axis=(1, 2))
        count += x.shape[1] * x.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0))
    std = np.maximum(std, 1e-3)  # a constant image set must not divide by zero
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)
