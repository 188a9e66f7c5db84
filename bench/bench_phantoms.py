#!/usr/bin/env python
"""Phantom cohort: how fast it is written and converted, and how hard it is for a small classifier.

    python bench/bench_phantoms.py [--count 200] [--workdir DIR] [--difficulty] [--train-count 600]
        [--severity 1.0 ...] [--resolution 128] [--epochs 30]

Speed: writes ``--count`` films in this process (one core) and converts them with ``python -m
data_processing convert --workers 1`` at 256 px; prints seconds and films per second for both.

Difficulty (``--difficulty``): for each ``--severity``, writes a cohort of ``--train-count`` films,
converts it at ``--resolution``, splits it by patient (70% train, 30% test; no patient in both), trains
a small CNN (5 conv blocks, 16-128 channels, mean and max pooled; class-weighted BCE, Adam, horizontal flips) on CPU and
prints the test AUC with a bootstrap 95% interval. The figure is the point of the phantoms: a small
classifier must score clearly below AUC 1 (and above 0.5), like a real, hard task.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_processing.phantoms import PhantomSettings, write_cohort  # noqa: E402


def _convert(cohort: Path, outdir: Path, resolution: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "data_processing", "convert", "--dicom", str(cohort / "dicom")]
        + ["--labels", str(cohort / "annotations.csv"), "--outdir", str(outdir)]
        + ["--resolution", str(resolution), "--workers", "1", "--no-progress"],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def speed(count: int, workdir: Path) -> None:
    start, cpu = time.perf_counter(), time.process_time()
    write_cohort(workdir / "speed", PhantomSettings(count=count, seed=0))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    size = sum(f.stat().st_size for f in (workdir / "speed" / "dicom").iterdir()) / 2**20
    print(
        f"write {count} films: {wall:.1f} s wall, {cpu:.1f} s CPU ({count / wall:.1f} films/s), {size:.0f} MiB"
    )
    wall = _convert(workdir / "speed", workdir / "speed-png", 256)
    print(f"convert {count} films at 256 px, --workers 1: {wall:.1f} s wall ({count / wall:.1f} films/s)")


def _load(dataset: Path, cohort: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from PIL import Image

    labels = json.loads((dataset / "dataset.json").read_text())["labels"]
    patients = {
        r["image_id"]: r["patient_id"] for r in json.loads((cohort / "phantoms.json").read_text())["images"]
    }
    images, y, groups = [], [], []
    for rel, label in labels:
        with Image.open(dataset / rel) as im:
            images.append(np.asarray(im, dtype=np.float32) / 127.5 - 1)
        y.append(label)
        groups.append(patients[Path(rel).stem])
    return np.stack(images)[:, None], np.asarray(y, np.float32), np.asarray(groups)


def _model(resolution: int):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers, channels = [], 1
            for out in (16, 32, 64, 64, 128):
                layers += [
                    nn.Conv2d(channels, out, 3, padding=1),
                    nn.BatchNorm2d(out),
                    nn.ReLU(),
                    nn.MaxPool2d(2),
                ]
                channels = out
            self.features = nn.Sequential(*layers)
            self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * channels, 1))

        def forward(self, x):
            f = self.features(x)  # [N, 128, R/32, R/32]
            return self.head(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1))

    return Net()


def _auc_ci(y: np.ndarray, score: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(y, score)
    boot = []
    for _ in range(1000):
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            boot.append(roc_auc_score(y[idx], score[idx]))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(auc), float(lo), float(hi)


def difficulty(count: int, severity: float, resolution: int, epochs: int, workdir: Path) -> None:
    import torch
    from sklearn.model_selection import GroupShuffleSplit

    torch.manual_seed(0)
    cohort = workdir / f"cohort-{severity}"
    write_cohort(cohort, PhantomSettings(count=count, seed=1, severity=severity))
    _convert(cohort, workdir / f"png-{severity}", resolution)
    x, y, groups = _load(workdir / f"png-{severity}", cohort)
    train, test = next(GroupShuffleSplit(1, test_size=0.3, random_state=0).split(x, y, groups))
    model = _model(resolution)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    pos_weight = torch.tensor((1 - y[train].mean()) / y[train].mean())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(train)).split(32):
            images = xt[batch]
            flip = torch.rand(len(batch)) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            optimiser.zero_grad()
            loss_fn(model(images)[:, 0], yt[batch]).backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        score = torch.sigmoid(model(torch.from_numpy(x[test]))[:, 0]).numpy()
    auc, lo, hi = _auc_ci(y[test], score, np.random.default_rng(0))
    print(
        f"severity {severity}: {count} films ({int(y.sum())} abnormal), {resolution} px, train {len(train)} / test "
        f"{len(test)} (by patient), {epochs} epochs ({time.perf_counter() - start:.0f} s): "
        f"test AUC {auc:.3f} (95% CI {lo:.3f}-{hi:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--difficulty", action="store_true")
    parser.add_argument("--train-count", type=int, default=600)
    parser.add_argument("--severity", type=float, nargs="+", default=[1.0])
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        speed(args.count, work)
        if args.difficulty:
            for severity in args.severity:
                difficulty(args.train_count, severity, args.resolution, args.epochs, work)


if __name__ == "__main__":
    main()
