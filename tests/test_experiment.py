"""``python -m classification experiment``: real / synthetic / real + synthetic classifiers on one real test set.

Tiny and fast: 16 px generated shapes, the ``small`` network, one epoch, a few images per class.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from classification_helpers import CLASS_NAMES, shape_images, shapes_dataset
from click.testing import CliRunner
from conftest import tiny_g_kwargs
from sklearn.metrics import roc_auc_score

from classification import cli, stats
from classification.experiment import markdown_table
from classification.model_file import load_classifier
from stylegan2_ada import checkpoint as ckpt
from stylegan2_ada.atomic import write_png_atomic
from stylegan2_ada.networks import Generator

RES = 16
FAST = [
    "--arch",
    "small",
    "--epochs",
    "1",
    "--batch",
    "16",
    "--bootstrap",
    "200",
    "--workers",
    "0",
    "--quiet",
]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("real")
    train = shapes_dataset(root / "train", n_per_class=24, resolution=RES, seed=0)
    test = shapes_dataset(root / "test", n_per_class=20, resolution=RES, seed=1)
    return train, test


def _generated_folder(root: Path, n_per_class: int, seed: int) -> Path:
    """What generate.py writes, one folder per class (``seed%04d.png`` + ``manifest.json``), holding
    shapes of the right class: a stand-in for a good generator."""
    images, labels = shape_images(n_per_class, RES, seed)
    for k, name in enumerate(CLASS_NAMES):
        folder = root / f"{k}-{name}"
        entries = []
        for i, image in enumerate(images[labels == k]):
            write_png_atomic(folder / f"seed{i:04d}.png", image)
            entries.append({"seed": i, "file": f"seed{i:04d}.png"})
        manifest = {"class": k, "class_name": name, "network": {"c_dim": 2}, "images": entries}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return root


def _run(*args: str):
    return CliRunner().invoke(cli.main, ["experiment", *args], catch_exceptions=False)


def test_experiment_with_generated_folders_tables_roc_and_resume(tmp_path, real):
    train, test = real
    synthetic = _generated_folder(tmp_path / "good", 16, seed=5)
    out = tmp_path / "exp"
    args = ["--real-train", str(train), "--real-test", str(test), "--synthetic", str(synthetic)]
    args += ["--synthetic-name", "good", "--counts", "8,16", "--repeats", "1", "--out", str(out), *FAST]
    result = _run(*args)
    assert result.exit_code == 0, result.output

    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["condition"]) == [
        "real",
        "good-synthetic-8",
        "good-mixed-8",
        "good-synthetic-16",
        "good-mixed-16",
    ]
    assert list(runs["train_synthetic_images"]) == [0, 16, 16, 32, 32]
    real_train_images = runs.loc[0, "train_images"]
    assert list(runs["train_images"]) == [
        real_train_images,
        16,
        real_train_images + 16,
        32,
        real_train_images + 32,
    ]
    # Every AUC is the one of the model's own test predictions, inside its interval; DeLong pairs each
    # model with the real-only model of its seed.
    real_pred = pd.read_csv(out / "cells/real/seed-0/eval/predictions.csv")
    for row in runs.itertuples():
        pred = pd.read_csv(out / f"cells/{row.condition}/seed-0/eval/predictions.csv")
        assert list(pred["path"]) == list(real_pred["path"])
        assert row.auc == pytest.approx(roc_auc_score(pred["label"], pred["score"]), abs=1e-6)
        assert row.ci_low <= row.auc <= row.ci_high
        if row.condition == "real":
            assert np.isnan(row.delong_p_vs_real)
        else:
            expected = stats.delong_test(pred["label"], pred["score"], real_pred["score"])
            assert row.delong_p_vs_real == pytest.approx(expected.p_value, rel=1e-4)
            assert row.auc_diff_vs_real == pytest.approx(expected.difference, abs=1e-5)

    # Validation: the real training set's split, the same images for every condition; never the test set.
    val_counts = set()
    for row in runs.itertuples():
        meta = load_classifier(str(out / f"cells/{row.condition}/seed-0/model.safetensors")).meta
        used = {s["path"] for s in meta.training_data["sources"]}
        assert str(test) not in used
        val_counts.add(json.dumps(meta.validation["counts"], sort_keys=True))
        if row.condition.startswith("good-synthetic"):
            assert meta.training_data["split"]["method"] == "given"
            assert meta.training_data["split"]["val_sources"] == [str(out / "splits/seed-0/val")]
            assert meta.training_data["train_counts"] == {
                "normal": row.synthetic_per_class,
                "abnormal": row.synthetic_per_class,
            }
    assert len(val_counts) == 1

    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["seeds"]) == [1] * 5
    assert summary.loc[0, "auc_mean"] == pytest.approx(runs.loc[0, "auc"])
    markdown = (out / "results.md").read_text()
    assert "| real only | 1 |" in markdown and "real + good, 16/class" in markdown
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / "experiment.json").read_text())
    assert manifest["class_names"] == CLASS_NAMES and len(manifest["cells"]) == 5
    assert manifest["real_test"]["sha256"] != manifest["real_train"]["sha256"]

    # A rerun trains nothing; a second repeat adds only its own cells.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/seed-0/model.safetensors")}
    again = _run(*args)
    assert again.exit_code == 0 and again.output.count("finished earlier") == 5
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    more = _run(*[a if a != "1" or args[i - 1] != "--repeats" else "2" for i, a in enumerate(args)])
    assert more.exit_code == 0 and more.output.count("finished earlier") == 5
    runs2 = pd.read_csv(out / "runs.csv")
    assert sorted(set(runs2["seed"])) == [0, 1] and len(runs2) == 10
    summary2 = pd.read_csv(out / "summary.csv")
    assert list(summary2["seeds"]) == [2] * 5 and summary2["auc_sd"].notna().all()

    # Other settings never reuse (or replace) a finished cell.
    changed = _run(*[a if a != "1" or args[i - 1] != "--epochs" else "2" for i, a in enumerate(args)])
    assert changed.exit_code == 1
    assert (
        changed.output.startswith("Error: ")
        and "epochs" in changed.output
        and "another --out" in changed.output
    )
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def _tiny_generator(path: Path, *, c_dim: int, seed: int) -> Path:
    torch.manual_seed(seed)
    G = Generator(**tiny_g_kwargs(res=RES, c_dim=c_dim, channels=1))
    metadata = {"class_names": CLASS_NAMES} if c_dim == 2 else {}
    ckpt.save_checkpoint(path, networks={"G_ema": G}, metadata=metadata)
    return path


def test_experiment_generates_balanced_disjoint_sets_from_networks(tmp_path, real):
    train, test = real
    gan = _tiny_generator(tmp_path / "gan.safetensors", c_dim=2, seed=0)
    spine = _tiny_generator(tmp_path / "spinegan.safetensors", c_dim=2, seed=1)
    out = tmp_path / "exp"
    args = ["--real-train", str(train), "--real-test", str(test)]
    args += ["--network", str(gan), "--network-name", "standard GAN", "--network", str(spine)]
    args += ["--network-name", "SpineGAN", "--counts", "4,6", "--gen-seed", "100", "--repeats", "1"]
    result = _run(*args, "--out", str(out), *FAST)
    assert result.exit_code == 0, result.output

    seeds = {}
    for slug, net in (("standard-gan", gan), ("spinegan", spine)):
        for k, name in enumerate(CLASS_NAMES):
            manifest = json.loads((out / "synthetic" / slug / f"{k}-{name}" / "manifest.json").read_text())
            assert manifest["class"] == k and manifest["network"]["sha256"] == ckpt.sha256_file(net)
            assert len(manifest["images"]) == 6
            seeds[slug, k] = manifest["seeds"]
    assert seeds["standard-gan", 0] == list(range(100, 106)) and seeds["standard-gan", 1] == list(
        range(106, 112)
    )
    assert seeds["spinegan", 0] == seeds["standard-gan", 0]  # the networks are compared on the same latents

    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 9 and list(runs["source"].dropna().unique()) == ["standard GAN", "SpineGAN"]
    assert set(runs.loc[runs["synthetic_per_class"] == 4, "train_synthetic_images"]) == {8}
    record = json.loads((out / "experiment.json").read_text())["synthetic"]["SpineGAN"]
    assert record["generated"] and record["generation"]["1-abnormal"]["seeds"] == "106-111"


def _error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_unusable_settings_are_one_error_line(tmp_path, real):
    train, test = real
    small = _generated_folder(tmp_path / "small", 4, seed=5)
    base = ["--real-train", str(train), "--out", str(tmp_path / "exp"), *FAST]
    assert "no synthetic source" in _error(_run(*base, "--real-test", str(test)))
    same = _error(_run(*base, "--real-test", str(train), "--synthetic", str(small), "--counts", "4"))
    assert "same content as the training set" in same
    few = _error(_run(*base, "--real-test", str(test), "--synthetic", str(small), "--counts", "4,8"))
    assert str(small) in few and "too few images" in few and "normal: 4" in few
    twice = _error(
        _run(*base, "--real-test", str(test), "--synthetic", str(small), "--synthetic", str(small))
    )
    assert "distinct names" in twice
    uncond = _tiny_generator(tmp_path / "uncond.safetensors", c_dim=0, seed=0)
    assert "c_dim" in _error(_run(*base, "--real-test", str(test), "--network", str(uncond), "--counts", "4"))
    usage = _run(
        *base,
        "--real-test",
        str(test),
        "--synthetic",
        str(small),
        "--synthetic-name",
        "a",
        "--synthetic-name",
        "b",
    )
    assert usage.exit_code == 2 and "one --synthetic-name per --synthetic" in usage.output
    assert not os.path.exists(tmp_path / "exp" / "cells")


def test_markdown_table():
    frame = pd.DataFrame({"name": ["a|b", None], "auc": [0.81234, float("nan")], "n": [3, 4]})
    assert markdown_table(frame) == "| name | auc | n |\n|---|---|---|\n| a\\|b | 0.812 | 3 |\n|  |  | 4 |\n"
