"""Training statistics: collection on device, reduction across ranks, ``stats.jsonl`` and TensorBoard.

Names follow upstream (``Loss/G/loss``, ``Loss/scores/real``, ``Progress/kimg``, ``Timing/sec_per_kimg``,
...). For each name and tick, ``stats.jsonl`` holds ``{"num": count, "mean": m, "std": s}``; one line
per tick with an extra ``"timestamp"`` (seconds since the epoch).
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from stylegan2_ada.training.distributed import DistInfo, all_gather_objects, all_reduce_sum


class StatsCollector:
    """Accumulates the count, sum and sum of squares of each named statistic (sums on the device).

    ``report`` does not synchronise with the device; :meth:`reduce` (once per tick, called on every rank
    together) sums across ranks and returns ``{name: {"num", "mean", "std"}}``, then starts afresh.
    Statistics named in ``exclude`` are dropped as they are reported.
    """

    def __init__(self, device: torch.device | str = "cpu", exclude: tuple[str, ...] = ()) -> None:
        self.device = torch.device(device)
        self.exclude = frozenset(exclude)
        self._count: dict[str, float] = {}  # name -> number of values (known on the host, no sync)
        self._moments: dict[str, torch.Tensor] = {}  # name -> [sum, sum of squares] float64 on device

    def report(self, name: str, value: torch.Tensor | float | int) -> None:
        """Add the values of ``value`` (any shape; every element counts once) to statistic ``name``."""
        if name in self.exclude:
            return
        if isinstance(value, torch.Tensor):
            v = value.detach().reshape(-1).to(self.device, torch.float64)
        else:
            v = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        if v.numel() == 0:
            return
        moments = torch.stack([v.sum(), v.square().sum()])  # [2]
        if name in self._moments:
            self._moments[name] += moments
            self._count[name] += v.numel()
        else:
            self._moments[name] = moments
            self._count[name] = float(v.numel())

    def names(self) -> list[str]:
        return sorted(self._moments)

    def reduce(self, info: DistInfo | None = None) -> dict[str, dict[str, float]]:
        """Sum across ranks, return ``{name: {"num", "mean", "std"}}`` (sorted by name) and reset.

        With several ranks every rank must call this at the same point (it communicates).
        """
        info = info or DistInfo()
        names = set(self._moments)
        if info.enabled:
            for other in all_gather_objects(sorted(names), info):
                names.update(other)  # type: ignore[arg-type]
        ordered = sorted(names)
        if not ordered:
            return {}
        zero = torch.zeros(2, dtype=torch.float64, device=self.device)
        counts = torch.tensor(
            [self._count.get(n, 0.0) for n in ordered], dtype=torch.float64, device=self.device
        )
        table = torch.cat(
            [counts[:, None], torch.stack([self._moments.get(n, zero) for n in ordered])], dim=1
        )  # [K, 3]
        all_reduce_sum(table, info)
        rows = table.cpu().tolist()
        self._moments.clear()
        self._count.clear()
        out: dict[str, dict[str, float]] = {}
        for name, (num, s, sq) in zip(ordered, rows):
            if num <= 0:
                continue
            mean = s / num
            var = max(sq / num - mean * mean, 0.0)
            out[name] = {"num": num, "mean": mean, "std": math.sqrt(var)}
        return out


def scalar_stat(value: float) -> dict[str, float]:
    """A statistic made of one value (``num`` 1, ``std`` 0)."""
    return {"num": 1.0, "mean": float(value), "std": 0.0}


def cpu_memory_gb() -> tuple[float, float]:
    """(current resident memory, peak resident memory) of this process in GiB."""
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak_kb / 2**20 if sys.platform != "darwin" else peak_kb / 2**30
    try:
        with open("/proc/self/statm") as f:
            rss_pages = int(f.read().split()[1])
        cur = rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, ValueError, IndexError):
        cur = peak
    return cur, peak


class StatsWriter:
    """Writes one ``stats.jsonl`` line per tick and, when TensorBoard is importable, event files."""

    def __init__(self, run_dir: str | os.PathLike[str], use_tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "stats.jsonl"
        self._tb = None
        if use_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception as exc:  # noqa: BLE001 - tensorboard missing or broken: skip quietly
                print(f"TensorBoard not available ({exc.__class__.__name__}); skipping event files")
            else:
                self._tb = SummaryWriter(str(run_dir))

    def write(
        self, stats: Mapping[str, Mapping[str, float]], global_kimg: float, timestamp: float | None = None
    ) -> None:
        """Append one line ``{name: {num, mean, std}, ..., "timestamp": t}``; log means to TensorBoard."""
        timestamp = time.time() if timestamp is None else timestamp
        record: dict[str, Any] = {name: dict(v) for name, v in stats.items()}
        record["timestamp"] = timestamp
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self._tb is not None:
            step = int(global_kimg)
            for name, v in stats.items():
                self._tb.add_scalar(name, v["mean"], global_step=step, walltime=timestamp)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
