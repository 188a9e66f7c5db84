"""The demo's presets: every size and length of the pipeline, in one place.

``ci``: tiny everything (a plumbing check that finishes in a few minutes on 2 CPU cores; the images and
numbers mean little). ``full``: the CPU demo a newcomer runs (7 minutes on 2 idle cores, measured; the
target is 15). ``gpu``: a larger run for one CUDA device. The GAN lengths are in kimg (thousands of
real images shown).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["PRESETS", "Preset"]


@dataclass(frozen=True)
class Preset:
    """Sizes of every stage. Lengths: ``gan_kimg`` per GAN, ``gan_tick`` kimg per progress tick,
    ``gan_snap`` ticks per snapshot (each snapshot is one point of the metric curves)."""

    name: str
    # the phantom cohort and its conversion
    films: int
    resolution: int
    test_fraction: float  # of the patients, for the real test set
    # the classifier of the spinegan plugin (and the metrics' feature extractor)
    classifier_epochs: int
    classifier_batch: int
    # the two GANs (standard, and with the spinegan plugin): train.py's length options and the rest
    gan_kimg: float
    gan_tick: float
    gan_snap: int
    gan_options: str  # more train.py options, as on a command line
    domain_weight: float
    # metrics over training (FID and KID on the classifier's features)
    metrics: tuple[str, ...]
    metrics_num: int  # generated images per evaluation
    # samples, the class-morph clip
    grid_columns: int
    grid_rows: int  # per class and per network
    video_seeds: str
    video_grid: str
    video_frames: int  # frames per transition of the morph
    # the synthetic-learning experiment
    counts: tuple[int, ...]
    repeats: int
    experiment_epochs: int
    bootstrap: int
    # everything
    seed: int = 0
    device: str | None = None  # None: CUDA when available, else CPU

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, Preset] = {
    "ci": Preset(
        name="ci",
        films=64,
        resolution=32,
        test_fraction=0.25,
        classifier_epochs=4,
        classifier_batch=16,
        gan_kimg=0.064,
        gan_tick=0.032,
        gan_snap=1,
        gan_options="--cfg cifar --batch 16 --cbase 512 --cmax 32 --map-depth 2 --gamma 0.1 --dlr 0.001 --workers 0",
        domain_weight=0.1,
        metrics=("fid50k_full", "kid50k_full"),
        metrics_num=64,
        grid_columns=8,
        grid_rows=1,
        video_seeds="0-3",
        video_grid="2x2",
        video_frames=12,
        counts=(16,),
        repeats=1,
        experiment_epochs=3,
        bootstrap=500,
    ),
    "full": Preset(
        name="full",
        films=400,
        resolution=128,  # the phantoms' lesions need it: a small classifier is at chance at 32-64 px
        test_fraction=0.25,
        classifier_epochs=40,  # the small CNN starts to learn the lesions after 20-30 epochs
        classifier_batch=32,
        gan_kimg=5,
        gan_tick=0.5,
        gan_snap=4,
        gan_options="--cfg cifar --batch 16 --cbase 512 --cmax 32 --map-depth 2 --gamma 0.1 --dlr 0.001 --workers 1",
        domain_weight=0.1,
        metrics=("fid50k_full", "kid50k_full"),
        metrics_num=128,
        grid_columns=8,
        grid_rows=2,
        video_seeds="0-3",
        video_grid="2x2",
        video_frames=30,
        counts=(100, 200),
        repeats=2,
        experiment_epochs=8,
        bootstrap=2000,
    ),
    "gpu": Preset(
        name="gpu",
        films=3000,
        resolution=256,
        test_fraction=0.2,
        classifier_epochs=40,
        classifier_batch=32,
        gan_kimg=300,
        gan_tick=4,
        gan_snap=10,
        gan_options="--batch 32 --cbase 16384 --cmax 512 --map-depth 2 --aug ada --target 0.6",
        domain_weight=0.1,
        metrics=("fid50k_full", "kid50k_full", "pr50k3_full"),
        metrics_num=2000,
        grid_columns=8,
        grid_rows=4,
        video_seeds="0-8",
        video_grid="3x3",
        video_frames=60,
        counts=(500, 1000, 2000),
        repeats=3,
        experiment_epochs=30,
        bootstrap=2000,
        device="cuda",
    ),
}
