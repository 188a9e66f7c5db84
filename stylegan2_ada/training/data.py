"""Feeding the loop: opening the dataset, loading that survives bad items, a resumable per-rank infinite
sampler, the DataLoader, and label tables."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from stylegan2_ada.training.distributed import DistInfo, all_gather_objects, all_reduce_sum


def open_training_dataset(
    data: str,
    *,
    cond: bool,
    mirror: bool,
    subset: int | None,
    seed: int,
    outdir: str,
    max_classes: int,
    pm: Any = None,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """The dataset a run trains on: the first plugin ``dataset_readers`` result (plugins get
    ``OUTDIR/.cache`` for their caches), else the core's image folder / zip reader.

    ``max_classes`` bounds the label dimension (classes of one-hot labels): a stray class id of 1000000
    in ``dataset.json`` would otherwise build a generator with a million-entry embedding. Raises
    :class:`stylegan2_ada.dataset.DatasetError` for unusable data, and for more label dimensions than
    ``max_classes`` (naming ``--max-classes``).
    """
    from stylegan2_ada.dataset import DatasetError, open_image_dataset

    ds = None
    if pm is not None:
        ds = pm.hook.dataset_readers(
            path=data, options=dict(options or {}), cache_dir=os.path.join(outdir, ".cache")
        )
    if ds is None:
        ds = open_image_dataset(
            data, use_labels=cond, xflip=mirror, max_size=subset, random_seed=seed, max_classes=max_classes
        )
    label_dim = int(ds.label_dim)
    if label_dim > max_classes:
        raise DatasetError(
            f"{data}: the labels have {label_dim} dimensions (classes), more than "
            f"--max-classes={max_classes}; check the labels (a class id of {label_dim - 1} makes "
            f"{label_dim} classes) or raise --max-classes"
        )
    return ds


@dataclass(frozen=True)
class ItemFailure:
    """A dataset item that could not be loaded.

    ``index``: the item's index; ``item``: what identifies it for a person (its file for datasets with a
    ``relpath(i)`` method, else ``"item <i>"``); ``reason``: the exception, as ``Type: message``.
    ``fatal``: no loadable replacement was found either (``item``/``reason`` then say where and why).
    """

    index: int
    item: str
    reason: str
    fatal: bool = False


class TolerantDataset(torch.utils.data.Dataset):
    """Any map-style dataset whose items may fail to load, made safe for a long training run.

    ``self[i]`` -> ``(image, label, failures)``: ``dataset[i]`` when it loads; if it raises (a truncated
    PNG, a file gone missing, a plugin's decoder error: any ``Exception``), the next items ``i+1, i+2, ...``
    (cyclically) are tried instead, and ``failures`` lists an :class:`ItemFailure` for each item that
    failed. An item that failed once is not tried again in this process (DataLoader workers each keep
    their own memory), so a bad file costs one failed read per process. After ``max_tries`` failures in
    one call, or when every item has failed, the result is a zero image and label whose ``failures`` end
    with a ``fatal`` entry: the caller must not train on it.

    The failures travel with the item, so they reach the main process from DataLoader workers through
    :func:`collate_tolerant`.
    """

    def __init__(self, dataset: Any, max_tries: int) -> None:
        if max_tries < 1:
            raise ValueError(f"max_tries must be at least 1, got {max_tries}")
        self.dataset = dataset
        self.max_tries = int(max_tries)
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def describe(self, index: int) -> str:
        """The file of item ``index`` where the dataset says (``relpath``), else ``item <index>``."""
        relpath = getattr(self.dataset, "relpath", None)
        if callable(relpath):
            try:
                return str(relpath(index))
            except Exception:  # the dataset cannot even name it: fall back to the index
                pass
        return f"item {index}"

    def __getitem__(self, index: int) -> tuple[Any, Any, list[ItemFailure]]:
        n = len(self.dataset)
        failures: list[ItemFailure] = []
        for offset in range(n):
            j = (int(index) + offset) % n
            if j in self._bad:
                continue
            try:
                image, label = self.dataset[j]
                return image, label, failures
            except Exception as exc:
                self._bad.add(j)
                failures.append(ItemFailure(j, self.describe(j), f"{type(exc).__name__}: {exc}"))
                if len(failures) >= self.max_tries:
                    break
        reason = (
            f"no loadable item found from item {index} on ({len(failures)} failed in this call, "
            f"{len(self._bad)} of {n} in this process)"
        )
        failures.append(ItemFailure(int(index), self.describe(int(index)), reason, fatal=True))
        res, channels = int(self.dataset.resolution), int(self.dataset.num_channels)
        image = np.zeros([channels, res, res], dtype=np.uint8)  # [C, H, W]
        return image, np.zeros([int(self.dataset.label_dim)], dtype=np.float32), failures


class BadItemLog:
    """The training items a run could not load: each logged once, counted over all ranks, bounded.

    The loader hands each batch's :class:`ItemFailure` records to :meth:`record`; once per step every
    rank calls :meth:`exchange`, which (in a multi-process run) shares them across ranks, logs each new
    item once on rank 0 (console and ``log.txt``) and says whether training must stop: more distinct
    bad items than ``limit`` (``--max-bad-images``), or an item with no loadable replacement.
    Items are told apart by :attr:`ItemFailure.item` (a mirrored copy of a bad file counts once).
    """

    def __init__(self, limit: int, say: Callable[[str], None]) -> None:
        self.limit = int(limit)
        self.say = say
        self.items: dict[str, str] = {}  # item -> reason, over all ranks
        self.fatal: str | None = None
        self._pending: list[ItemFailure] = []  # this rank's records not yet exchanged

    @property
    def count(self) -> int:
        """Distinct items that failed so far (over all ranks, as of the last :meth:`exchange`)."""
        return len(self.items)

    def record(self, failures: Iterable[ItemFailure]) -> None:
        self._pending.extend(failures)

    def exchange(self, info: DistInfo, device: torch.device) -> str | None:
        """Share, log and count the records since the last call; return why training must stop, or ``None``.

        A collective operation in multi-process runs (one small all-reduce; the records themselves are
        gathered only when some rank has any): call it on every rank at the same point.
        """
        pending, self._pending = self._pending, []
        if info.enabled:
            num = all_reduce_sum(torch.tensor([len(pending)], dtype=torch.int64, device=device), info)
            gathered = all_gather_objects(pending, info) if int(num) > 0 else []
        else:
            gathered = [pending]
        for rank, failures in enumerate(gathered):
            for f in failures:
                if f.fatal:
                    self.fatal = self.fatal or f"{f.item}: {f.reason}"
                elif f.item not in self.items:
                    self.items[f.item] = f.reason
                    where = f" (rank {rank})" if info.enabled else ""
                    self.say(
                        f"Skipped a training item that cannot be loaded{where}: {f.item}: {f.reason} "
                        f"[{self.count} so far, at most {self.limit} (--max-bad-images)]"
                    )
        return self.stop_reason()

    def stop_reason(self) -> str | None:
        if self.count > self.limit:
            items = "item" if self.count == 1 else "items"
            return (
                f"{self.count} training {items} could not be loaded, more than --max-bad-images={self.limit} "
                f"(each is listed in log.txt); fix or remove them, or raise --max-bad-images"
            )
        if self.fatal is not None:
            return f"no training item could be loaded: {self.fatal}"
        return None


def collate_tolerant(
    items: Sequence[tuple[Any, Any, list[ItemFailure]]],
) -> tuple[torch.Tensor, torch.Tensor, list[ItemFailure]]:
    """Batch :class:`TolerantDataset` items: (images [B, C, H, W], labels [B, c_dim], all failures)."""
    images, labels = default_collate([(image, label) for image, label, _ in items])
    return images, labels, [f for _, _, failures in items for f in failures]


def without_failures(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, list[ItemFailure]]],
    record: Callable[[list[ItemFailure]], None],
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The (images, labels) of loader batches, handing each batch's failures to ``record`` first."""
    for images, labels, failures in batches:
        if failures:
            record(failures)
        yield images, labels


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless stream of dataset indices, shuffled per epoch and split across ranks.

    The global stream is the concatenation of per-epoch permutations (epoch ``e`` shuffled with
    ``RandomState(seed + e)``); rank ``r`` of ``world_size`` takes every ``world_size``-th element
    starting at ``r``. ``start`` is the number of indices this rank has already consumed, so a resumed
    run continues exactly where the snapshot left off.
    """

    def __init__(
        self,
        size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        start: int = 0,
    ) -> None:
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.size, self.rank, self.world_size = int(size), int(rank), int(world_size)
        self.shuffle, self.seed, self.start = bool(shuffle), int(seed), int(start)

    def _perm(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.RandomState((self.seed + epoch) % 2**32).permutation(self.size)

    def __iter__(self) -> Iterator[int]:
        i = self.start
        epoch, perm = -1, None
        while True:
            g = self.rank + i * self.world_size  # position in the global stream
            e, off = divmod(g, self.size)
            if e != epoch:
                epoch, perm = e, self._perm(e)
            yield int(perm[off])
            i += 1


def make_loader(
    dataset: TolerantDataset,
    sampler: InfiniteSampler,
    batch_gpu: int,
    workers: int,
    pin_memory: bool,
    seed: int,
) -> torch.utils.data.DataLoader:
    """DataLoader of (uint8 images [batch_gpu, C, H, W], float32 labels [batch_gpu, c_dim], failures)
    batches of a :class:`TolerantDataset`.

    Uses its own ``torch.Generator`` so that creating the loader does not consume the global RNG.
    """
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(prefetch_factor=2, persistent_workers=True)
    return torch.utils.data.DataLoader(
        dataset,
        sampler=sampler,
        batch_size=batch_gpu,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=collate_tolerant,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def label_table(dataset: Any, c_dim: int) -> np.ndarray:
    """All labels as float32 [len(dataset), c_dim] (c_dim 0 -> an empty [n, 0] array)."""
    n = len(dataset)
    if c_dim == 0:
        return np.zeros([n, 0], dtype=np.float32)
    rows = [np.asarray(dataset.get_label(i), dtype=np.float32).reshape(-1) for i in range(n)]
    return np.stack(rows).astype(np.float32)


def images_to_float(img: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 [N, C, H, W] in [-1, 1] on ``device``."""
    return img.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1
