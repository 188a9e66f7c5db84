"""Feeding the loop: opening the dataset, a resumable per-rank infinite sampler, the DataLoader, and
label tables."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch


def open_training_dataset(
    data: str,
    *,
    cond: bool,
    mirror: bool,
    subset: int | None,
    seed: int,
    outdir: str,
    pm: Any = None,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """The dataset a run trains on: the first plugin ``dataset_readers`` result (plugins get
    ``OUTDIR/.cache`` for their caches), else the core's image folder / zip reader.

    Raises :class:`stylegan2_ada.dataset.DatasetError` for unusable data.
    """
    from stylegan2_ada.dataset import open_image_dataset

    if pm is not None:
        ds = pm.hook.dataset_readers(
            path=data, options=dict(options or {}), cache_dir=os.path.join(outdir, ".cache")
        )
        if ds is not None:
            return ds
    return open_image_dataset(data, use_labels=cond, xflip=mirror, max_size=subset, random_seed=seed)


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
    dataset: Any, sampler: InfiniteSampler, batch_gpu: int, workers: int, pin_memory: bool, seed: int
) -> torch.utils.data.DataLoader:
    """DataLoader of (uint8 images [batch_gpu, C, H, W], float32 labels [batch_gpu, c_dim]) batches.

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
