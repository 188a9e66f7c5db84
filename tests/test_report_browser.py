"""The demo's ``report.html`` in a real headless browser (Debian's Chromium, driven by playwright): no
console or page errors, no failed request, every image loaded, the clip loaded, every section there,
nothing fetched from outside the folder. Without Chromium the tests skip, and in CI they fail."""

from __future__ import annotations

import shutil
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pandas as pd
import pytest
from demo_helpers import check_page, chromium, ci_demo

from showcase.presets import PRESETS
from showcase.report import SECTIONS, write_report
from showcase.stages import MARKER, STAGES, Demo
from stylegan2_ada.atomic import write_json_atomic, write_png_atomic

SECTION_IDS = [sid for sid, _ in SECTIONS]


def _png(path: Path, size: tuple[int, int], seed: int) -> str:
    write_png_atomic(path, np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8))
    return str(path)


def _mp4(path: Path) -> str:
    """A short H.264 clip, encoded the way gen_video.py writes (imageio-ffmpeg's bundled ffmpeg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(str(path), (64, 64), fps=24, codec="libx264", pix_fmt_out="yuv420p")
    writer.send(None)
    for i in range(12):
        writer.send(np.full((64, 64, 3), 20 * i, dtype=np.uint8).tobytes())
    writer.close()
    return str(path)


def _stage_outputs(root: Path) -> dict[str, dict]:
    """What each stage's marker records, with real files of the real kinds (PNG, MP4, CSV)."""
    nets = ("standard GAN", "SpineGAN")
    summary = pd.DataFrame(
        {
            "label": ["real only", "SpineGAN synthetic only, 16/class"],
            "seeds": [1, 1],
            "auc_mean": [0.8, 0.7],
            "auc_sd": [None, None],
            "auc_min": [0.8, 0.7],
            "auc_max": [0.8, 0.7],
            "per_seed": ["0.800 (0.700-0.900)", "0.700 (0.600-0.800)"],
            "delong_p_per_seed": ["", "0.04"],
        }
    )
    (root / "09-experiment").mkdir(parents=True)
    summary.to_csv(root / "09-experiment" / "summary.csv", index=False)
    grids = {
        name: {
            src: _png(root / "08-samples" / f"{src}-{k}.png".replace(" ", "_"), (32, 256), k)
            for src in ("real", *nets)
        }
        for k, name in enumerate(("normal", "abnormal"))
    }
    return {
        "01-phantoms": {
            "dicom": str(root / "01-phantoms/cohort/dicom"),
            "annotations": str(root / "01-phantoms/cohort/annotations.csv"),
            "films": 10,
            "patients": 4,
            "abnormal_films": 4,
            "lesion_types": {"Osteophytes": 3, "Vertebral collapse": 1},
        },
        "02-dataset": {
            "dataset": str(root / "02-dataset/images"),
            "statuses": {"converted": 10},
            "images": 10,
        },
        "03-split": {
            "method": "StratifiedGroupKFold, 1 of 4 folds",
            "train_patients": 3,
            "train_counts": {"normal": 5, "abnormal": 3},
            "test_patients": 1,
            "test_counts": {"normal": 1, "abnormal": 1},
        },
        "04-classifier": {
            "best_epoch": 2,
            "validation_auc": 0.9,
            "test_auc": {"auc": 0.8, "low": 0.6, "high": 0.95},
            "roc": _png(root / "04-classifier/eval/roc.png", (64, 64), 1),
        },
        "07-metrics": {
            "losses_png": _png(root / "07-metrics/losses.png", (64, 96), 2),
            "metrics_png": _png(root / "07-metrics/metrics.png", (64, 96), 3),
            "final": {net: {"fid50k_full": 1.5, "kid50k_full": 0.01} for net in nets},
            "detector": {"feature_dim": 64},
            "seconds_in_training": {net: 2.5 for net in nets},
        },
        "08-samples": {
            "grids": grids,
            "video": _mp4(root / "08-samples" / "morph.mp4"),
            "video_network": "SpineGAN",
            "video_classes": ["normal", "abnormal", "normal"],
            "seeds": list(range(8)),
        },
        "09-experiment": {
            "folder": str(root / "09-experiment"),
            "summary": str(root / "09-experiment" / "summary.csv"),
            "roc": _png(root / "09-experiment" / "roc.png", (64, 64), 4),
        },
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A report written by showcase.report from stage markers and files of the real kinds."""
    root = tmp_path_factory.mktemp("demo")
    outputs = _stage_outputs(root)
    for stage in STAGES[:-1]:
        record = {
            "stage": stage.name,
            "title": stage.title,
            "seconds": 1.5,
            "cpu_seconds": 1.0,
            "load_average": 3.0,
        }
        write_json_atomic(root / stage.name / MARKER, {**record, "outputs": outputs.get(stage.name, {})})
    return write_report(Demo(root, PRESETS["ci"], "cpu"))


def _assert_renders(page) -> None:
    assert page.console_errors == [] and page.page_errors == [] and page.failed_requests == []
    assert page.sections == SECTION_IDS
    assert page.images and all(width > 0 for _, width in page.images), page.images
    assert len(page.videos) == 1 and page.videos[0][1] >= 1 and page.videos[0][2] is None, page.videos
    assert page.external == []


def test_report_renders_in_chromium(report):
    page = check_page(report, chromium())
    _assert_renders(page)
    assert len(page.images) == 2 * 3 + 4  # the grids (2 classes x real + 2 networks), 4 figures


def test_the_check_sees_a_missing_image_and_a_broken_clip(report, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(report.parent, broken)
    (broken / "07-metrics" / "losses.png").unlink()
    (broken / "08-samples" / "morph.mp4").write_bytes(b"not a video")
    page = check_page(broken / "report.html", chromium())
    assert ("07-metrics/losses.png", 0) in page.images
    assert page.videos[0][2] is not None  # MEDIA_ERR_*
    assert page.failed_requests or page.console_errors


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ci_demo_report_renders_in_chromium():
    executable = chromium()
    outdir, result = ci_demo()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _assert_renders(check_page(outdir / "report.html", executable))
