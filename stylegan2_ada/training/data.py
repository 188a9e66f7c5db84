"""Feeding the loop: opening the dataset, loading that survives bad items, a resumable per-rank infinite
sampler, the DataLoader, label tables, and the real-batch samplers plugins may supply (per step, any
size, e.g. :class:`PoissonSampler`) with their loader (:class:`StepChunks`)."""

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

    def __init__(self, limit: int, say: Callable[[str], None], show_items: bool = True) -> None:
        self.limit = int(limit)
        self.say = say
        self.show_items = bool(show_items)  # False: log counts only, never a file name or reason
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
                    what = f": {f.item}: {f.reason}" if self.show_items else ""
                    self.say(
                        f"Skipped a training item that cannot be loaded{where}{what} "
                        f"[{self.count} so far, at most {self.limit} (--max-bad-images)]"
                    )
        return self.stop_reason()

    def stop_reason(self) -> str | None:
        if self.count > self.limit:
            items = "item" if self.count == 1 else "items"
            listed = " (each is listed in log.txt)" if self.show_items else ""
            return (
                f"{self.count} training {items} could not be loaded, more than --max-bad-images={self.limit}"
                f"{listed}; fix or remove them, or raise --max-bad-images"
            )
        if self.fatal is not None:
            return "no training item could be loaded" + (f": {self.fatal}" if self.show_items else "")
        return None


def collate_tolerant(
    items: Sequence[tuple[Any, Any, list[ItemFailure]]],
) -> tuple[torch.Tensor, torch.Tensor, list[ItemFailure]]:
    """Batch :class:`TolerantDataset` items: (images [B, C, H, W], labels [B, c_dim], all failures).

    No items (a step in which this rank has no real examples, see :class:`StepChunks`): empty tensors."""
    if not items:
        return torch.empty([0], dtype=torch.uint8), torch.empty([0]), []
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
    return torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=batch_gpu, **_loader_kwargs(workers, pin_memory, seed)
    )


def make_step_loader(
    dataset: TolerantDataset, chunks: StepChunks, workers: int, pin_memory: bool, seed: int
) -> torch.utils.data.DataLoader:
    """DataLoader of the batches :class:`StepChunks` chooses (as :func:`make_loader`'s, or empty)."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=chunks, **_loader_kwargs(workers, pin_memory, seed)
    )


def _loader_kwargs(workers: int, pin_memory: bool, seed: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=collate_tolerant,
        generator=torch.Generator().manual_seed(seed),
    )
    if workers > 0:
        kwargs.update(prefetch_factor=2, persistent_workers=True)
    return kwargs


# --------------------------------------------------------------------------- samplers plugins may supply


class PoissonSampler:
    """Poisson sampling: at every step each of the ``size`` examples is in the batch independently with
    probability ``rate``, so batches have ``rate * size`` examples on average and may be empty.

    A :class:`~stylegan2_ada.plugin_api.RealBatchSampler`: ``indices(step)`` depends only on ``(seed,
    step)`` (numpy's PCG64 seeded with both), so every rank draws the same batch and a resumed run the
    same sequence. Indices come in increasing order.
    """

    def __init__(self, size: int, rate: float, seed: int = 0) -> None:
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 < rate <= 1:
            raise ValueError(f"the sampling rate must be in (0, 1], got {rate}")
        self.size, self.rate, self.seed = int(size), float(rate), int(seed)
        self.expected_batch = self.rate * self.size

    def indices(self, step: int) -> np.ndarray:
        """The dataset indices of step ``step``: int64 [n], n ~ Binomial(size, rate)."""
        rng = np.random.Generator(np.random.PCG64([self.seed, int(step)]))
        return np.flatnonzero(rng.random(self.size) < self.rate).astype(np.int64)


def rank_share(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The part of a step's indices that rank ``rank`` of ``world_size`` trains on: ``indices[rank::W]``."""
    return np.asarray(indices, dtype=np.int64)[rank::world_size]


class StepChunks(torch.utils.data.Sampler):
    """Batch sampler for a :class:`~stylegan2_ada.plugin_api.RealBatchSampler`: from step ``start`` on,
    this rank's share of each step's indices (:func:`rank_share`) in chunks of at most ``batch_gpu``; a
    step in which the rank has none yields ONE empty chunk, so every step yields something (a loader
    prefetching ahead never searches far for the next item). :meth:`chunks_in` says how many chunks a
    step yields: the loop takes exactly that many batches per step."""

    def __init__(self, sampler: Any, rank: int, world_size: int, batch_gpu: int, start: int = 0) -> None:
        self.sampler = sampler
        self.rank, self.world_size, self.batch_gpu, self.start = rank, world_size, int(batch_gpu), int(start)

    def chunks_in(self, share: np.ndarray) -> int:
        """Batches a step with this rank's ``share`` yields (at least 1)."""
        return max(-(-len(share) // self.batch_gpu), 1)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            share = rank_share(self.sampler.indices(step), self.rank, self.world_size)
            for k in range(self.chunks_in(share)):
                yield share[k * self.batch_gpu : (k + 1) * self.batch_gpu].tolist()
            step += 1


def plugin_sampler(pm: Any, options: Any, dataset: Any) -> Any:
    """The :class:`~stylegan2_ada.plugin_api.RealBatchSampler` a plugin supplies (``real_batch_sampler``),
    or ``None``. ``options`` are the resolved :class:`.options.TrainingOptions`.

    Raises :class:`.options.OptionsError` when the sampler lacks ``indices``, its ``expected_batch`` is not
    a positive number, or the minibatch-std group is not 1 (batches of any size).
    """
    from stylegan2_ada.plugins import single_result
    from stylegan2_ada.training.options import OptionsError

    if pm is None:
        return None
    answer = single_result(pm, "real_batch_sampler", options=options.context_options(), dataset=dataset)
    if answer is None:
        return None
    name, sampler = answer
    expected = getattr(sampler, "expected_batch", None)
    if not callable(getattr(sampler, "indices", None)) or not isinstance(expected, (int, float)):
        raise OptionsError(
            f"plugin {name!r}: real_batch_sampler must return an object with indices(step) and expected_batch"
        )
    if not (np.isfinite(expected) and expected > 0):
        raise OptionsError(f"plugin {name!r}: the sampler's expected_batch must be positive, got {expected}")
    if options.mbstd_group != 1:
        raise OptionsError(
            f"plugin {name!r} samples batches of varying size, which needs --mbstd-group 1 "
            f"(got {options.mbstd_group}); a plugin can set it through adjust_options"
        )
    return sampler


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
