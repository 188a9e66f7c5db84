"""The embedded default dataset behind ``train.py --data demo``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from stylegan2_ada.dataset import open_image_dataset
from stylegan2_ada.demo_data import make_demo_dataset, render_shape

REPO = Path(__file__).resolve().parents[1]


def test_shapes_are_distinguishable_by_fill_ratio():
    rng = np.random.default_rng(1)
    for kind, expected in ((0, np.pi / 4), (1, 1.0)):
        img = render_shape(kind, 32, rng).astype(np.float64) / 255
        ys, xs = np.nonzero(img > 0.5)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert abs(img.sum() / box - expected) < 0.12


def test_demo_dataset_is_a_labelled_two_class_dataset(tmp_path):
    folder = make_demo_dataset(tmp_path / "demo", count=8)
    ds = open_image_dataset(str(folder), use_labels=True)
    assert len(ds) == 8 and tuple(ds.image_shape) == (1, 32, 32)
    assert ds.class_names == ["disc", "square"] and ds.label_dim == 2
    assert sorted(ds.raw_labels.tolist()) == [0] * 4 + [1] * 4
    before = sorted(p.stat().st_mtime_ns for p in folder.iterdir())
    make_demo_dataset(folder, count=8)  # complete already: nothing rewritten
    assert sorted(p.stat().st_mtime_ns for p in folder.iterdir()) == before


def test_demo_dataset_that_lost_an_image_is_rewritten(tmp_path):
    folder = make_demo_dataset(tmp_path / "demo", count=4)
    lost = folder / "square-00001.png"
    original = lost.read_bytes()
    lost.unlink()  # its label would now be refused as naming an absent file
    make_demo_dataset(folder, count=4)
    assert lost.read_bytes() == original  # the same deterministic image
    assert len(open_image_dataset(str(folder), use_labels=True)) == 4


def test_train_dry_run_with_demo_data(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--outdir",
            str(tmp_path),
            "--data",
            "demo",
            "--cond",
            "1",
            "--device",
            "cpu",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / ".cache" / "demo" / "dataset.json").exists()
    assert json.loads((tmp_path / ".cache" / "demo" / "dataset.json").read_text())["class_names"] == [
        "disc",
        "square",
    ]
    assert "demo" in out.stdout
