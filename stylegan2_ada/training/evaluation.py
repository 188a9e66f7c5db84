"""Quality metrics during training (``train.py --metrics ... --detector PATH [--metrics-num N]``).

What the rest of training calls:

* :func:`check_detector` (``train.py``, before any run folder exists): loads ``--detector`` once on this
  rank's device, so that a missing, unreadable, unsafe or unusable file is a usage error, not a failure
  at the first snapshot.
* :func:`setup_snapshot_metrics` (set-up, every rank): on rank 0 of a run resumed from a training snapshot,
  copies the resumed run's metric history into the new run folder (:func:`carry_over_metric_files`);
  with ``--metrics``, loads the feature extractor and returns a :class:`SnapshotMetrics`.
* :meth:`SnapshotMetrics.evaluate` (after each snapshot is written, at the end of the run too; every rank
  at the same point): :func:`stylegan2_ada.metrics.compute_metrics` of ``G_ema`` against the training
  dataset (as trained: ``--mirror`` and ``--subset`` included), the ranks sharing the feature extraction.

Rank 0 then writes, for each metric, one line to ``metric-<name>.jsonl`` in the run folder (upstream's
fields plus ours: the snapshot's file name and its kimg), one line to ``stats.jsonl`` holding
``Metrics/<key>`` for every result key (per-class keys included), ``Progress/kimg`` and
``Timing/metrics_sec``, the same ``Metrics/<key>`` scalars to TensorBoard, and a console line.

Real-image features are cached in ``<outdir>/.cache/metrics`` (keyed by the dataset's content and the
extractor), so they are extracted once. The generated images are the same latents, labels and noise at
every snapshot (see :mod:`stylegan2_ada.metrics.features`).

The training is unchanged by the metrics: loading the extractor and evaluating run inside
``torch.random.fork_rng``, so a run with ``--metrics`` draws the very same random numbers as one without.

Failures: a :class:`~stylegan2_ada.metrics.MetricError` (too few images for a metric, class problems),
a :class:`~stylegan2_ada.metrics.DetectorError` (the network fails on the data) or a
:class:`~stylegan2_ada.dataset.DatasetError` (an unreadable image) is logged as a ``Warning:`` line and
training continues; the next snapshot tries again. These arise on every rank alike, except an unreadable
image, which only the rank reading it sees: with several ranks that one ends the run (the other ranks
would otherwise wait for it forever).

Resuming: a resumed run writes a new run folder (see :mod:`.snapshots`). Its metric files start with the
lines of the resumed run's files (the folder of the resumed snapshot) up to the resumed snapshot's kimg,
so that the curves in the new folder are continuous; lines past it (from a continuation that was
abandoned) and lines without a kimg stay only in the old folder.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stylegan2_ada.atomic import atomic_write
from stylegan2_ada.dataset import DatasetError
from stylegan2_ada.metrics import (
    DetectorError,
    FeatureExtractor,
    MetricError,
    append_metric_jsonl,
    compute_metrics,
    load_extractor,
)
from stylegan2_ada.metrics.curves import record_kimg
from stylegan2_ada.training.distributed import DistInfo, dist_info_from_env
from stylegan2_ada.training.options import OptionsError, TrainingOptions
from stylegan2_ada.training.stats import StatsWriter, scalar_stat

__all__ = [
    "METRIC_CACHE",
    "SnapshotMetrics",
    "carry_over_metric_files",
    "check_detector",
    "setup_snapshot_metrics",
]

METRIC_CACHE = Path(".cache") / "metrics"  # the real-feature cache, under --outdir
_KIMG_TOLERANCE = 1e-9


@contextlib.contextmanager
def _rng_untouched(device: torch.device) -> Iterator[None]:
    """Run the block on a fork of torch's CPU (and ``device``'s CUDA) random state: the training's random
    stream does not depend on whether metrics are computed (DataLoaders and network constructors draw
    from it)."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        yield


def _rank_device(o: TrainingOptions, info: DistInfo) -> torch.device:
    """The device this rank trains on (``cuda:<local rank>`` or ``cpu``)."""
    return torch.device("cuda", info.local_rank) if o.device == "cuda" else torch.device("cpu")


def _load(o: TrainingOptions, device: torch.device, pm: Any, log: Callable[[str], None]) -> FeatureExtractor:
    with _rng_untouched(device):
        try:
            return load_extractor(o.detector, device=device, pm=pm, log=log)
        except DetectorError as exc:
            raise OptionsError(f"--detector: {exc}") from exc


def check_detector(o: TrainingOptions, pm: Any = None) -> None:
    """With ``--metrics``: load ``--detector`` on this rank's device (then let it go). Raises
    :class:`OptionsError` naming the file and the problem."""
    if o.metrics:
        _load(o, _rank_device(o, dist_info_from_env()), pm, log=lambda message: None)


# ---------------------------------------------------------------------------------------------- resume


def carry_over_metric_files(
    previous_run: Path, run_dir: Path, upto_kimg: float
) -> dict[str, tuple[int, int]]:
    """Copy the lines of ``previous_run/metric-*.jsonl`` whose kimg is at most ``upto_kimg`` into the same
    files in ``run_dir`` (written atomically, lines unchanged).

    Returns ``{file name: (lines copied, lines left out)}``; left out are lines past ``upto_kimg``, lines
    without a kimg (neither a ``kimg`` field nor a snapshot name) and lines that are not JSON objects.
    """
    out: dict[str, tuple[int, int]] = {}
    for path in sorted(previous_run.glob("metric-*.jsonl")):
        kept: list[str] = []
        left_out = 0
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            kimg = record_kimg(record) if isinstance(record, dict) else None
            if kimg is not None and kimg <= upto_kimg + _KIMG_TOLERANCE:
                kept.append(line + "\n")
            else:
                left_out += 1
        if kept:
            data = "".join(kept).encode("utf-8")
            atomic_write(run_dir / path.name, lambda f, data=data: f.write(data))
        out[path.name] = (len(kept), left_out)
    return out


def _report_carry_over(
    previous_run: Path, counts: dict[str, tuple[int, int]], say: Callable[[str], None]
) -> None:
    if not counts:
        return
    parts = [
        f"{name} {kept} line(s)" + (f" ({out} left out)" if out else "")
        for name, (kept, out) in counts.items()
    ]
    say(f"Metric history carried over from {previous_run}: {', '.join(parts)}")


# ------------------------------------------------------------------------------------------ evaluation


@dataclass
class SnapshotMetrics:
    """The metrics of one run, evaluated at each snapshot (see the module docstring). Built by
    :func:`setup_snapshot_metrics`; one per rank."""

    names: list[str]
    extractor: FeatureExtractor
    dataset: Any
    num_gen: int | None  # generated images per metric; None: each metric's own
    cache_dir: Path
    device: torch.device
    info: DistInfo
    workers: int
    run_dir: Path | None  # None on ranks other than 0
    writer: StatsWriter | None
    say: Callable[[str], None]  # prints on rank 0 (and into log.txt)

    def evaluate(self, G_ema: nn.Module, snapshot: Path | None, cur_nimg: int) -> dict[str, float]:
        """Compute the metrics of ``G_ema`` (only read) for the snapshot just written (its path on rank 0,
        ``None`` elsewhere) at ``cur_nimg`` images. Every rank must call this at the same point.

        Returns ``{result key: value}`` on rank 0 (``{}`` on the other ranks, and after a failure, which is
        logged: see the module docstring).
        """
        kimg = cur_nimg / 1000
        start = time.time()
        try:
            with _rng_untouched(self.device):
                results = compute_metrics(
                    self.names,
                    G_ema,
                    self.dataset,
                    self.extractor,
                    num_gen=self.num_gen,
                    device=self.device,
                    cache_dir=self.cache_dir,
                    rank=self.info.rank,
                    world_size=self.info.world_size,
                    workers=self.workers,
                    progress=False,
                    log=self.say,
                )
        except DatasetError as exc:
            if self.info.enabled:
                raise
            self._warn(kimg, exc)
            return {}
        except (MetricError, DetectorError) as exc:
            self._warn(kimg, exc)
            return {}
        if not results:
            return {}
        values: dict[str, float] = {}
        for name, result in results.items():
            if self.run_dir is not None:
                append_metric_jsonl(
                    self.run_dir, name, result, str(snapshot) if snapshot else None, kimg=kimg
                )
            values.update(result["results"])
        seconds = time.time() - start
        if self.writer is not None:
            stats = {f"Metrics/{key}": scalar_stat(value) for key, value in values.items()}
            stats.update({"Progress/kimg": scalar_stat(kimg), "Timing/metrics_sec": scalar_stat(seconds)})
            self.writer.write(stats, global_kimg=kimg)
        shown = "  ".join(f"{key} {value:.5g}" for key, value in values.items() if "_class" not in key)
        where = f" ({snapshot.name})" if snapshot is not None else ""
        self.say(f"Metrics at {kimg:g} kimg{where}: {shown}  [{seconds:.1f}s]")
        return values

    def _warn(self, kimg: float, exc: Exception) -> None:
        self.say(f"Warning: metrics at {kimg:g} kimg failed, training continues: {type(exc).__name__}: {exc}")


def setup_snapshot_metrics(
    o: TrainingOptions,
    *,
    dataset: Any,
    device: torch.device,
    info: DistInfo,
    run_dir: Path | None,
    writer: StatsWriter | None,
    pm: Any,
    say: Callable[[str], None],
    cur_nimg: int,
) -> SnapshotMetrics | None:
    """Metric set-up on every rank (see the module docstring); ``cur_nimg``: where the run starts.

    Returns ``None`` without ``--metrics``. Raises :class:`OptionsError` for a ``--detector`` that cannot
    be loaded (checked before by :func:`check_detector`, so only if the file changed since).
    """
    if run_dir is not None and o.resume is not None and o.resume_format == "snapshot":
        previous = Path(o.resume).resolve().parent
        try:
            _report_carry_over(previous, carry_over_metric_files(previous, run_dir, cur_nimg / 1000), say)
        except OSError as exc:  # the history stays in the old folder; training need not stop for it
            say(f"Warning: could not carry over the metric history of {previous}: {exc}")
    if not o.metrics:
        return None
    extractor = _load(o, device, pm, log=say)
    cache_dir = Path(o.outdir) / METRIC_CACHE
    count = (
        f"{o.metrics_num} generated images" if o.metrics_num is not None else "the metrics' own image counts"
    )
    say(
        f"Metrics at each snapshot: {', '.join(o.metrics)} ({count}); detector {extractor.name}, "
        f"{extractor.feature_dim} features; real-image features cached in {cache_dir}"
    )
    return SnapshotMetrics(
        names=list(o.metrics),
        extractor=extractor,
        dataset=dataset,
        num_gen=o.metrics_num,
        cache_dir=cache_dir,
        device=device,
        info=info,
        workers=o.workers,
        run_dir=run_dir,
        writer=writer,
        say=say,
    )
