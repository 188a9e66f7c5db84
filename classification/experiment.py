"""The synthetic-learning experiment: are generated radiographs worth training on?

Command (registered by ``classification/cli.py``)::

    python -m classification experiment --real-train A --real-test B
        (--synthetic DIR [--synthetic-name NAME] ... | --network NET [--network-name NAME] ...)
        [--counts 500,1000,2000] [--repeats 3] [--arch small] [--epochs 30] ... --out DIR

What it trains
    For every repeat ``r`` (training seed ``seed + r``) one classifier per *condition*:

    * ``real``: the real training images only;
    * for every synthetic source ``S`` and every count ``n`` of ``--counts``: ``S`` synthetic only, and
      real + ``S``, with the first ``n`` generated images **of each class** (so ``n`` per class, balanced).

    Training is :func:`classification.train.train_classifier` with the same settings for every
    condition. Model selection and early stopping use a validation split of the **real training set**
    (:func:`classification.data.prepare_data`, stratified and grouped by patient when ``dataset.json``
    has ``"groups"``; seeded by the training seed, so every condition of one seed is selected on the same
    images). The synthetic-only models get that very split as their validation data (written once per
    seed to ``splits/seed-S/val/``). The test set is never an input of training or selection: it is
    refused when its content equals the training set's.

What it measures
    Every model is scored on the same real test set by :func:`classification.evaluate.evaluate` (AUC with
    a stratified bootstrap 95% interval, the same bootstrap seed for every model, hence paired resamples;
    the threshold chosen on the validation split), and compared with the real-only model of the same
    seed by the paired DeLong test (:func:`classification.stats.delong_test`).

Synthetic sources
    ``--synthetic DIR``: what ``python -m classification train --synthetic`` reads (a folder of
    ``generate.py`` outputs, one per class). ``--network NET``: a conditional generator; the experiment
    generates ``max(counts)`` images per class itself (:func:`stylegan2_ada.generation.generate_images`)
    into ``synthetic/<name>/<k>-<class>/``: class ``k`` gets the seeds ``gen_seed + k * max(counts)`` to
    ``gen_seed + (k + 1) * max(counts) - 1`` (disjoint between classes; the same for every network, so
    two networks are compared on the same latents). Names: ``--network-name`` / ``--synthetic-name`` in
    the same order, else the file stem / folder name.

Outputs in ``--out``
    * ``cells/<condition>/seed-S/``: ``model.safetensors``, ``eval/`` (``metrics.json``,
      ``predictions.csv``, ``roc.png``) and ``cell.json`` (written last: the cell is finished);
    * ``runs.csv``: one row per model (condition, seed, AUC, interval, DeLong against real-only, ...);
    * ``summary.csv``: one row per condition (mean, SD, min and max AUC over seeds, ...);
    * ``results.md``: both tables in Markdown;
    * ``roc.png``: one ROC curve per condition, vertically averaged over the seeds;
    * ``experiment.json``: settings, data fingerprints, the synthetic sets (networks, seeds per class),
      every cell, software versions.

Resuming
    A rerun with the same ``--out`` skips every finished cell whose settings and data fingerprints are
    those of the new run (more ``--counts``, ``--repeats`` or sources simply add cells). A finished cell
    made with other settings or other data is never replaced: the run stops with an error naming the
    difference. Generated sets are reused when their ``manifest.json`` names the same network (SHA-256),
    seeds and truncation.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click
import numpy as np

from classification.options import model_training_options
from classification.train import TrainConfig
from classification.transform import Augment
from stylegan2_ada.atomic import atomic_write, write_json_atomic

__all__ = [
    "Condition",
    "ExperimentConfig",
    "ExperimentError",
    "SourceSpec",
    "display_summary",
    "experiment_command",
    "markdown_table",
    "run_experiment",
]

EXPERIMENT_FORMAT = "spinegan-synthetic-experiment"
EXPERIMENT_FORMAT_VERSION = 1
CELL_FILE = "cell.json"
MODEL_FILE = "model.safetensors"
EVAL_DIR = "eval"
RUNS_CSV = "runs.csv"
SUMMARY_CSV = "summary.csv"
RESULTS_MD = "results.md"
ROC_PNG = "roc.png"
MANIFEST_JSON = "experiment.json"
_FPR_GRID = np.linspace(0.0, 1.0, 201)  # where the seeds' ROC curves are averaged


class ExperimentError(ValueError):
    """The experiment cannot run as asked; the message says why (and names the file or folder)."""


@dataclass(frozen=True)
class SourceSpec:
    """A synthetic source as given: a display ``name`` and either a ``folder`` or a ``network`` file."""

    name: str
    folder: str | None = None
    network: str | None = None


@dataclass(frozen=True)
class Condition:
    """One kind of training data. ``mode``: ``"real"``, ``"synthetic"`` or ``"real+synthetic"``;
    ``source`` and ``count`` (images per class) for the synthetic ones."""

    key: str
    mode: str
    source: str | None = None
    count: int | None = None

    @property
    def label(self) -> str:
        if self.mode == "real":
            return "real only"
        if self.mode == "synthetic":
            return f"{self.source} synthetic only, {self.count}/class"
        return f"real + {self.source}, {self.count}/class"


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything the experiment depends on (the command's options). ``train`` is the template of every
    cell's training (its data fields and seed are set per cell)."""

    real_train: str
    real_test: str
    sources: tuple[SourceSpec, ...]
    out: str
    counts: tuple[int, ...] = (500, 1000, 2000)
    repeats: int = 3
    seed: int = 0
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    gen_seed: int = 0
    truncation_psi: float = 1.0
    gen_batch: int = 16
    n_resamples: int = 2000
    eval_batch: int = 64


# --------------------------------------------------------------------------------------------------
# Small helpers.


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "source"


def conditions(config: ExperimentConfig) -> list[Condition]:
    """The conditions in table order: real only, then per source and count synthetic, real + synthetic."""
    out = [Condition("real", "real")]
    for spec in config.sources:
        slug = _slug(spec.name)
        for n in config.counts:
            out.append(Condition(f"{slug}-synthetic-{n}", "synthetic", spec.name, n))
            out.append(Condition(f"{slug}-mixed-{n}", "real+synthetic", spec.name, n))
    return out


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ExperimentError(f"{path}: cannot read: {exc}") from None


def _software() -> dict[str, str]:
    import pandas
    import sklearn
    import torch

    from stylegan2_ada.checkpoint import package_version

    return {
        "spinegan": package_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def markdown_table(df: Any, float_format: str = "{:.3f}") -> str:
    """A pandas DataFrame as a GitHub Markdown table (pandas' ``to_markdown`` needs ``tabulate``, which
    the project does not depend on). Floats use ``float_format``; NaN and None are empty; ``|`` is
    escaped."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return ""
        if isinstance(value, (float, np.floating)):
            return float_format.format(value)
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


# --------------------------------------------------------------------------------------------------
# Data: fingerprints, the validation splits, the synthetic sets.


@dataclass
class _Data:
    class_names: list[str]
    train_sha256: str
    test_sha256: str
    test_n: int
    synthetic: dict[str, dict[str, Any]]  # name -> {"path", "per_class", "sha256", "generated"}


def _open_real(config: ExperimentConfig) -> _Data:
    from classification.data import fingerprint, prepare_data
    from stylegan2_ada.dataset import open_image_dataset

    train = prepare_data([config.real_train], val_fraction=config.train.val_fraction, seed=config.seed)
    test = open_image_dataset(config.real_test, use_labels=True)
    test_sha = fingerprint(test)
    if test_sha == train.sources[0].sha256:
        raise ExperimentError(
            f"the test set {config.real_test} has the same content as the training set {config.real_train}"
        )
    if test.class_names is not None and list(test.class_names) != train.class_names:
        raise ExperimentError(
            f"{config.real_test}: class names {test.class_names} differ from the training set's {train.class_names}"
        )
    return _Data(train.class_names, train.sources[0].sha256, test_sha, len(test), {})


def _write_split(config: ExperimentConfig, seed: int, folder: str) -> None:
    """``folder``/val: the validation part of the real training set for ``seed`` (what training with
    ``data=[real_train]`` holds out), copied with a ``dataset.json``; built beside and renamed into place."""
    from classification.data import prepare_data
    from stylegan2_ada.dataset import open_source

    final = os.path.join(folder, "val")
    if os.path.isdir(final):
        return
    data = prepare_data([config.real_train], val_fraction=config.train.val_fraction, seed=seed)
    dataset = data.sources[0].dataset
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    source = open_source(config.real_train)
    try:
        labels = []
        for s in data.val:
            rel = dataset.relpath(s.index)
            content = source.read_bytes(rel)
            atomic_write(os.path.join(partial, rel), lambda f, c=content: f.write(c))
            labels.append([rel, s.label])
    finally:
        source.close()
    write_json_atomic(
        os.path.join(partial, "dataset.json"),
        {"labels": labels, "class_names": data.class_names, "split": data.split},
    )
    os.replace(partial, final)


def _generated_manifest_matches(folder: str, sha256: str, seeds: list[int], psi: float) -> bool:
    """Whether ``folder`` holds a finished generation of these seeds by this network; ExperimentError
    when it holds another one (never replaced)."""
    path = os.path.join(folder, "manifest.json")
    if not os.path.isfile(path):
        return False
    manifest = _read_json(path)
    found = (manifest.get("network", {}).get("sha256"), manifest.get("seeds"), manifest.get("truncation_psi"))
    if found == (sha256, seeds, psi):
        return True
    raise ExperimentError(
        f"{folder} holds images generated with other settings (network SHA-256 {found[0]}, "
        f"{len(found[1] or [])} seeds, truncation {found[2]}); use another --out or another --network-name"
    )


def _generate(
    config: ExperimentConfig, spec: SourceSpec, class_names: list[str], say: Callable, progress: bool
) -> str:
    """Generate ``max(counts)`` images per class from ``spec.network``; the folder of class folders."""
    from stylegan2_ada import checkpoint as ckpt
    from stylegan2_ada.generation import generate_images, select_generator

    assert spec.network is not None
    sha = ckpt.sha256_file(spec.network)
    _, G = select_generator(ckpt.load_checkpoint(spec.network, "cpu").networks)
    if int(G.c_dim) != len(class_names):
        raise ExperimentError(
            f"{spec.network}: the generator has {int(G.c_dim)} classes (c_dim), the real data {len(class_names)} "
            f"({', '.join(class_names)}); the experiment needs a conditional generator of the same classes"
        )
    del G
    n = max(config.counts)
    root = os.path.join(config.out, "synthetic", _slug(spec.name))
    for k, name in enumerate(class_names):
        folder = os.path.join(root, f"{k}-{_slug(name)}")
        first = config.gen_seed + k * n
        seeds = list(range(first, first + n))
        if _generated_manifest_matches(folder, sha, seeds, config.truncation_psi):
            continue
        say(f"Generating {n} images of class {k} ({name}) with {spec.name} (seeds {first}-{first + n - 1})")
        generate_images(
            spec.network,
            seeds,
            folder,
            class_idx=k,
            truncation_psi=config.truncation_psi,
            batch_size=config.gen_batch,
            device=config.train.device,
            progress=progress,
        )
    return root


def _synthetic_sources(config: ExperimentConfig, data: _Data, say: Callable, progress: bool) -> None:
    """Fill ``data.synthetic``: every source's folder, its images per class and fingerprints; generated
    sets are made first. Every source must have ``max(counts)`` images of each class."""
    from classification.data import prepare_data

    for spec in config.sources:
        generated = spec.network is not None
        path = _generate(config, spec, data.class_names, say, progress) if generated else spec.folder
        assert path is not None
        opened = prepare_data([config.real_train], synthetic=[path], seed=config.seed)
        summary = opened.summary()
        per_class = summary["train_synthetic_counts"]
        short = {c: k for c, k in per_class.items() if k < max(config.counts)}
        if short:
            raise ExperimentError(
                f"{path}: {spec.name} has too few images for --counts up to {max(config.counts)} per class: "
                + ", ".join(f"{c}: {k}" for c, k in short.items())
            )
        data.synthetic[spec.name] = {
            "path": os.path.abspath(path),
            "per_class": per_class,
            "sha256": sorted(s["sha256"] for s in summary["sources"] if s["kind"] == "synthetic"),
            "generated": generated,
            "network": os.path.abspath(spec.network) if spec.network else None,
        }


# --------------------------------------------------------------------------------------------------
# Cells.


def _cell_dir(config: ExperimentConfig, condition: Condition, seed: int) -> str:
    return os.path.join(config.out, "cells", condition.key, f"seed-{seed}")


def _cell_train_config(config: ExperimentConfig, condition: Condition, seed: int, data: _Data) -> TrainConfig:
    base = dataclasses.replace(config.train, seed=seed, data=(), val_data=(), synthetic=())
    if condition.mode == "real":
        return dataclasses.replace(base, data=(os.path.abspath(config.real_train),))
    synthetic = (data.synthetic[condition.source]["path"],)
    if condition.mode == "real+synthetic":
        return dataclasses.replace(
            base,
            data=(os.path.abspath(config.real_train),),
            synthetic=synthetic,
            synthetic_per_class=condition.count,
        )
    val = os.path.abspath(os.path.join(config.out, "splits", f"seed-{seed}", "val"))
    return dataclasses.replace(
        base, synthetic=synthetic, val_data=(val,), synthetic_per_class=condition.count
    )


def _train_settings(train: TrainConfig) -> dict[str, Any]:
    """``train`` as JSON reads it back (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(train)))


def _identity(
    config: ExperimentConfig, condition: Condition, train: TrainConfig, data: _Data
) -> dict[str, Any]:
    """What a finished cell must match to be reused: its training settings (not the device or the loader
    processes, which do not change what is learnt) and the fingerprints of every input."""
    settings = _train_settings(train)
    for key in ("device", "workers"):
        settings.pop(key)
    return {
        "condition": dataclasses.asdict(condition),
        "train": settings,
        "real_train_sha256": data.train_sha256,
        "real_test_sha256": data.test_sha256,
        "synthetic_sha256": data.synthetic[condition.source]["sha256"] if condition.source else None,
        "bootstrap": {"n_resamples": config.n_resamples, "seed": config.seed},
    }


_IDENTITY_WORDS = {
    "condition": "the condition",
    "train": "training settings",
    "real_train_sha256": "the real training set",
    "real_test_sha256": "the real test set",
    "synthetic_sha256": "the synthetic images",
    "bootstrap": "the bootstrap settings",
}


def _finished(cell: str, identity: dict[str, Any]) -> bool:
    """Whether ``cell`` is finished with this ``identity``; ExperimentError when it is finished with
    another (it is never replaced)."""
    path = os.path.join(cell, CELL_FILE)
    if not os.path.isfile(path):
        return False
    stored = _read_json(path).get("identity")
    if stored == identity:
        return True
    stored = stored if isinstance(stored, dict) else {}
    differ = []
    for key, words in _IDENTITY_WORDS.items():
        if stored.get(key) != identity.get(key):
            if key == "train":
                old = stored.get("train") if isinstance(stored.get("train"), dict) else {}
                words += (
                    " (" + ", ".join(k for k in identity["train"] if old.get(k) != identity["train"][k]) + ")"
                )
            differ.append(words)
    raise ExperimentError(
        f"{cell} was made with other {'; '.join(differ)}; finished cells are never replaced: use another --out"
    )


def _run_cell(
    config: ExperimentConfig, condition: Condition, seed: int, data: _Data, progress: bool
) -> dict[str, Any]:
    from classification.evaluate import evaluate
    from classification.model_file import save_classifier
    from classification.train import train_classifier
    from stylegan2_ada.dataset import open_image_dataset

    cell = _cell_dir(config, condition, seed)
    train = _cell_train_config(config, condition, seed, data)
    identity = _identity(config, condition, train, data)
    if _finished(cell, identity):
        return {**_read_json(os.path.join(cell, CELL_FILE)), "resumed": True}
    started = time.perf_counter()
    result = train_classifier(train, progress=progress)
    model_path = os.path.join(cell, MODEL_FILE)
    os.makedirs(cell, exist_ok=True)
    save_classifier(model_path, result.classifier)
    val = os.path.join(config.out, "splits", f"seed-{seed}", "val")
    metrics = evaluate(
        result.classifier,
        open_image_dataset(config.real_test, use_labels=True),
        os.path.join(cell, EVAL_DIR),
        model_path=model_path,
        val_dataset=open_image_dataset(val, use_labels=True),
        n_resamples=config.n_resamples,
        seed=config.seed,
        batch=config.eval_batch,
        device=config.train.device,
        workers=config.train.workers,
        progress=progress,
    )
    meta = result.classifier.meta
    record = {
        "identity": identity,
        "condition": condition.key,
        "seed": seed,
        "auc": metrics["auc"],
        "validation_auc": meta.validation["auc"],
        "best_epoch": meta.training["best_epoch"],
        "epochs_run": meta.training["epochs_run"],
        "train_counts": meta.training_data["train_counts"],
        "train_synthetic_counts": meta.training_data["train_synthetic_counts"],
        "seconds_train": round(result.seconds, 2),
        "seconds_total": round(time.perf_counter() - started, 2),
    }
    write_json_atomic(os.path.join(cell, CELL_FILE), record)
    return {**record, "resumed": False}


# --------------------------------------------------------------------------------------------------
# Tables and the figure.


def _scores(config: ExperimentConfig, condition: Condition, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels int [N], scores float [N])`` of a finished cell, in test-set order."""
    import pandas as pd

    frame = pd.read_csv(os.path.join(_cell_dir(config, condition, seed), EVAL_DIR, "predictions.csv"))
    return frame["label"].to_numpy(np.int64), frame["score"].to_numpy(np.float64)


def _runs_table(config: ExperimentConfig, cells: Sequence[tuple[Condition, int, dict[str, Any]]]) -> Any:
    """One row per trained model, with the DeLong test against the real-only model of its seed."""
    import pandas as pd

    from classification import stats

    real_scores = {seed: _scores(config, c, seed) for c, seed, _ in cells if c.mode == "real"}
    rows = []
    for condition, seed, record in cells:
        auc = record["auc"]
        row: dict[str, Any] = {
            "condition": condition.key,
            "label": condition.label,
            "training_data": condition.mode,
            "source": condition.source,
            "synthetic_per_class": condition.count,
            "seed": seed,
            "auc": auc["auc"],
            "ci_low": auc["low"],
            "ci_high": auc["high"],
            "auc_diff_vs_real": None,
            "delong_p_vs_real": None,
            "validation_auc": record["validation_auc"],
            "best_epoch": record["best_epoch"],
            "epochs_run": record["epochs_run"],
            "train_images": sum(record["train_counts"].values()),
            "train_synthetic_images": sum(record["train_synthetic_counts"].values()),
            "seconds": record["seconds_total"],
        }
        if condition.mode != "real":
            labels, scores = _scores(config, condition, seed)
            real_labels, real = real_scores[seed]
            if not np.array_equal(labels, real_labels):
                raise ExperimentError(f"{_cell_dir(config, condition, seed)}: scored another test set")
            test = stats.delong_test(labels, scores, real)
            row["auc_diff_vs_real"], row["delong_p_vs_real"] = test.difference, test.p_value
        rows.append(row)
    return pd.DataFrame(rows)


def _summary_table(runs: Any, order: Sequence[Condition]) -> Any:
    """One row per condition: AUC over seeds (mean, SD, range), and the seeds' DeLong results."""
    import pandas as pd

    rows = []
    for condition in order:
        part = runs[runs["condition"] == condition.key]
        if part.empty:
            continue
        p = part["delong_p_vs_real"].dropna()
        diff = part["auc_diff_vs_real"].dropna()
        rows.append(
            {
                "condition": condition.key,
                "label": condition.label,
                "training_data": condition.mode,
                "source": condition.source,
                "synthetic_per_class": condition.count,
                "seeds": len(part),
                "auc_mean": part["auc"].mean(),
                "auc_sd": part["auc"].std(ddof=1) if len(part) > 1 else None,
                "auc_min": part["auc"].min(),
                "auc_max": part["auc"].max(),
                "auc_diff_vs_real_mean": diff.mean() if len(diff) else None,
                "delong_p_median": p.median() if len(p) else None,
                "seeds_worse_p05": int(((p < 0.05) & (diff < 0)).sum()) if len(p) else None,
                "seeds_better_p05": int(((p < 0.05) & (diff > 0)).sum()) if len(p) else None,
                "per_seed": "; ".join(
                    f"{r.auc:.3f} ({r.ci_low:.3f}-{r.ci_high:.3f})" for r in part.itertuples(index=False)
                ),
                "delong_p_per_seed": "; ".join(f"{v:.3g}" for v in p),
            }
        )
    return pd.DataFrame(rows)


def display_summary(summary: Any) -> Any:
    """The summary as people read it (the Markdown table and the demo report)."""
    import pandas as pd

    def mean_sd(r: Any) -> str:
        return f"{r.auc_mean:.3f}" + (f" ± {r.auc_sd:.3f}" if pd.notna(r.auc_sd) else "")

    return pd.DataFrame(
        {
            "training data": summary["label"],
            "seeds": summary["seeds"],
            "AUC mean ± SD": [mean_sd(r) for r in summary.itertuples(index=False)],
            "AUC min-max": [f"{a:.3f}-{b:.3f}" for a, b in zip(summary["auc_min"], summary["auc_max"])],
            "per seed: AUC (95% CI)": summary["per_seed"],
            "DeLong p vs real only (per seed)": summary["delong_p_per_seed"],
        }
    )


def _mean_roc(config: ExperimentConfig, condition: Condition, seeds: Sequence[int]) -> np.ndarray:
    """TPR on :data:`_FPR_GRID`, vertically averaged over the seeds (each seed's ROC read as the highest
    TPR reached at or below each FPR)."""
    from classification import stats

    curves = []
    for seed in seeds:
        fpr, tpr, _ = stats.roc_points(*_scores(config, condition, seed))
        best = np.maximum.accumulate(tpr)
        curves.append(best[np.searchsorted(fpr, _FPR_GRID, side="right") - 1])
    return np.mean(curves, axis=0)


def _plot(
    config: ExperimentConfig, summary: Any, order: Sequence[Condition], seeds: Sequence[int], n_test: int
) -> None:
    from classification.roc import RocCurve, plot_roc

    curves = []
    styles = {"real": "-", "synthetic": "--", "real+synthetic": "-."}
    for condition in order:
        row = summary[summary["condition"] == condition.key]
        if row.empty:
            continue
        r = row.iloc[0]
        spread = f" ± {r.auc_sd:.3f}" if r.seeds > 1 else ""
        curves.append(
            RocCurve(
                f"{condition.label}: AUC {r.auc_mean:.3f}{spread}",
                _FPR_GRID,
                _mean_roc(config, condition, seeds),
                linestyle=styles[condition.mode],
            )
        )
    title = f"Real test set (n = {n_test}); " + (
        f"mean ROC over {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    )
    plot_roc(curves, os.path.join(config.out, ROC_PNG), title=title)


def _write_tables(config: ExperimentConfig, runs: Any, summary: Any) -> None:
    for frame, name in ((runs, RUNS_CSV), (summary, SUMMARY_CSV)):
        text = frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")
        atomic_write(os.path.join(config.out, name), lambda f, t=text: f.write(t.encode("utf-8")))
    per_run = runs[["label", "seed", "auc", "ci_low", "ci_high", "auc_diff_vs_real", "delong_p_vs_real"]]
    per_run = per_run.rename(
        columns={
            "label": "training data",
            "auc": "AUC",
            "ci_low": "95% CI low",
            "ci_high": "95% CI high",
            "auc_diff_vs_real": "AUC - real only",
            "delong_p_vs_real": "DeLong p",
        }
    )
    text = (
        "# Synthetic-learning experiment\n\n"
        f"Real training set `{config.real_train}`, real test set `{config.real_test}`; "
        f"architecture `{config.train.arch}`, at most {config.train.epochs} epochs; "
        "synthetic counts are images per class. AUC on the real test set with a stratified bootstrap 95% "
        "interval; DeLong: paired test against the real-only model of the same seed.\n\n"
        "## Summary\n\n"
        + markdown_table(display_summary(summary))
        + "\n## Every model\n\n"
        + markdown_table(per_run.astype(object).where(per_run.notna(), None), "{:.4g}")
    )
    atomic_write(os.path.join(config.out, RESULTS_MD), lambda f: f.write(text.encode("utf-8")))


# --------------------------------------------------------------------------------------------------
# The run.


def _check(config: ExperimentConfig) -> None:
    if not config.sources:
        raise ExperimentError("no synthetic source: give --synthetic DIR or --network NET (repeatable)")
    if not config.counts or any(n < 1 for n in config.counts):
        raise ExperimentError(
            f"--counts must be positive numbers of images per class, got {list(config.counts)}"
        )
    if config.repeats < 1:
        raise ExperimentError(f"--repeats must be at least 1, got {config.repeats}")
    slugs = [_slug(s.name) for s in config.sources]
    if len(set(slugs)) != len(slugs):
        raise ExperimentError(
            f"the synthetic sources need distinct names, got {[s.name for s in config.sources]}; "
            "use --network-name / --synthetic-name"
        )
    for spec in config.sources:
        path = spec.network or spec.folder
        if path is None or not os.path.exists(path):
            raise ExperimentError(f"{path}: no such file or folder ({spec.name})")
    for path, option in ((config.real_train, "--real-train"), (config.real_test, "--real-test")):
        if not os.path.exists(path):
            raise ExperimentError(f"{path}: no such file or folder ({option})")
    out = os.path.abspath(config.out)
    for path in (config.real_train, config.real_test, *(s.folder for s in config.sources if s.folder)):
        if out == os.path.abspath(path):
            raise ExperimentError(f"--out {config.out} is an input folder; give a new folder")


def run_experiment(
    config: ExperimentConfig, *, progress: bool = True, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run (or resume) the experiment (module docstring) and write its outputs; returns the manifest.

    Raises:
        ExperimentError, classification.train.TrainingError, stylegan2_ada.dataset.DatasetError,
        classification.evaluate.EvaluationError, stylegan2_ada.generation.GenerationError: unusable
        settings or data (the message names the file).
    """
    started = time.perf_counter()
    _check(config)
    os.makedirs(config.out, exist_ok=True)
    data = _open_real(config)
    _synthetic_sources(config, data, say, progress)
    seeds = [config.seed + r for r in range(config.repeats)]
    for seed in seeds:
        _write_split(config, seed, os.path.join(config.out, "splits", f"seed-{seed}"))
    order = conditions(config)
    cells = [(c, seed) for seed in seeds for c in order]
    for condition, seed in cells:  # refuse before training anything when a finished cell conflicts
        train = _cell_train_config(config, condition, seed, data)
        _finished(_cell_dir(config, condition, seed), _identity(config, condition, train, data))
    done: list[tuple[Condition, int, dict[str, Any]]] = []
    for i, (condition, seed) in enumerate(cells, 1):
        say(f"[{i}/{len(cells)}] {condition.label}, seed {seed}")
        record = _run_cell(config, condition, seed, data, progress)
        say(
            f"    test AUC {record['auc']['auc']:.3f} ({record['auc']['low']:.3f}-{record['auc']['high']:.3f})"
            + (" (finished earlier)" if record["resumed"] else f", {record['seconds_total']:.1f} s")
        )
        done.append((condition, seed, record))
    runs = _runs_table(config, done)
    summary = _summary_table(runs, order)
    _write_tables(config, runs, summary)
    _plot(config, summary, order, seeds, data.test_n)
    manifest = _manifest(config, data, seeds, done, time.perf_counter() - started)
    write_json_atomic(os.path.join(config.out, MANIFEST_JSON), manifest)
    return manifest


def _manifest(
    config: ExperimentConfig,
    data: _Data,
    seeds: list[int],
    done: Sequence[tuple[Condition, int, dict[str, Any]]],
    seconds: float,
) -> dict[str, Any]:
    """``experiment.json``: settings, data fingerprints, the synthetic sets, every cell, versions."""
    return {
        "format": EXPERIMENT_FORMAT,
        "format_version": EXPERIMENT_FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "real_train": {"path": os.path.abspath(config.real_train), "sha256": data.train_sha256},
        "real_test": {
            "path": os.path.abspath(config.real_test),
            "sha256": data.test_sha256,
            "n": data.test_n,
        },
        "class_names": data.class_names,
        "counts_per_class": list(config.counts),
        "seeds": seeds,
        "synthetic": {
            name: {**info, **_generation_record(info["path"])} if info["generated"] else info
            for name, info in data.synthetic.items()
        },
        "training": _train_settings(dataclasses.replace(config.train, data=(), val_data=(), synthetic=())),
        "validation": "a split of the real training set per seed (splits/seed-S/val); the test set is never used",
        "bootstrap": {"n_resamples": config.n_resamples, "seed": config.seed, "confidence": 0.95},
        "cells": [
            {
                "condition": c.key,
                "label": c.label,
                "seed": s,
                "folder": os.path.relpath(_cell_dir(config, c, s), config.out),
                "auc": r["auc"]["auc"],
            }
            for c, s, r in done
        ],
        "files": {"runs": RUNS_CSV, "summary": SUMMARY_CSV, "markdown": RESULTS_MD, "roc": ROC_PNG},
        "software": _software(),
        "seconds": round(seconds, 2),
    }


def _generation_record(root: str) -> dict[str, Any]:
    """Per class folder of a generated set: network file and SHA-256, class, seeds, truncation."""
    record = {}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, "manifest.json")
        if os.path.isfile(path):
            m = _read_json(path)
            seeds = m["seeds"]
            record[name] = {
                "network": m["network"],
                "class": m["class"],
                "class_name": m["class_name"],
                "seeds": f"{seeds[0]}-{seeds[-1]}"
                if seeds == list(range(seeds[0], seeds[-1] + 1))
                else seeds,
                "truncation_psi": m["truncation_psi"],
                "noise_mode": m["noise_mode"],
            }
    return {"generation": record}


# --------------------------------------------------------------------------------------------------
# Command line.


def _counts(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if any(n < 1 for n in counts):
        raise click.BadParameter(f"counts must be at least 1, got {value!r}")
    return tuple(dict.fromkeys(counts))


def _sources(paths: Sequence[str], names: Sequence[str], kind: str) -> list[SourceSpec]:
    if names and len(names) != len(paths):
        raise click.UsageError(f"give one --{kind}-name per --{kind} ({len(paths)}), got {len(names)}")
    out = []
    for i, path in enumerate(paths):
        name = names[i] if names else os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        out.append(SourceSpec(name, network=path) if kind == "network" else SourceSpec(name, folder=path))
    return out


@click.command("experiment", context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option(
    "--real-train",
    required=True,
    metavar="DATASET",
    help="Real labelled training images (folder or zip with dataset.json); a validation split of it selects the models.",
)
@click.option(
    "--real-test",
    required=True,
    metavar="DATASET",
    help="Real labelled test images, held out: every model is scored on them.",
)
@click.option(
    "--synthetic",
    multiple=True,
    metavar="DIR",
    help="Generated images (as classification train --synthetic reads: one generate.py folder per class); repeatable.",
)
@click.option(
    "--synthetic-name",
    multiple=True,
    metavar="NAME",
    help="Name of each --synthetic source, in order [folder name].",
)
@click.option(
    "--network",
    multiple=True,
    metavar="NET",
    help="A conditional generator to generate the synthetic images with (max(--counts) per class); repeatable.",
)
@click.option(
    "--network-name",
    multiple=True,
    metavar="NAME",
    help="Name of each --network, in order (e.g. 'standard GAN', SpineGAN) [file stem].",
)
@click.option(
    "--counts",
    default="500,1000,2000",
    callback=_counts,
    metavar="N,N,...",
    help="Synthetic images per class, one condition each.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    metavar="R",
    help="Models per condition (training seeds SEED..SEED+R-1).",
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, help="First training seed; also the bootstrap seed."
)
@model_training_options
@click.option("--no-augment", is_flag=True, help="Train without augmentation (flip, rotation, crop).")
@click.option(
    "--trunc",
    "truncation_psi",
    type=float,
    default=1.0,
    metavar="PSI",
    help="Truncation psi of the generated images (--network).",
)
@click.option(
    "--gen-seed",
    type=click.IntRange(min=0),
    default=0,
    metavar="S",
    help="First generation seed (--network); classes get disjoint ranges.",
)
@click.option(
    "--bootstrap",
    "n_resamples",
    type=click.IntRange(min=100),
    default=2000,
    metavar="N",
    help="Bootstrap resamples of each AUC interval.",
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Device [cuda if available, else cpu].")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    metavar="N",
    help="Data loader processes [available CPUs, at most 4].",
)
@click.option("--out", required=True, metavar="DIR", help="Experiment folder (created; a rerun resumes it).")
@click.option("--quiet", is_flag=True, help="No progress bars (one line per model stays).")
def experiment_command(**opts: Any) -> None:
    """Train classifiers on real, synthetic and real + synthetic images (several counts and seeds),
    score them all on the same real test set, and write the table (runs.csv, summary.csv, results.md)
    and one ROC figure (roc.png).

    \b
    python -m classification experiment --real-train real_train/ --real-test real_test/ \\
        --network gan.safetensors --network-name "standard GAN" \\
        --network spinegan.safetensors --network-name SpineGAN \\
        --counts 500,1000,2000 --repeats 3 --out experiment/
    """
    from classification.evaluate import EvaluationError
    from classification.model_file import ClassifierFileError
    from classification.train import TrainingError
    from stylegan2_ada import devices
    from stylegan2_ada.dataset import DatasetError
    from stylegan2_ada.generation import GenerationError, check_truncation_psi

    sources = _sources(opts["network"], opts["network_name"], "network") + _sources(
        opts["synthetic"], opts["synthetic_name"], "synthetic"
    )
    try:
        psi = check_truncation_psi(opts["truncation_psi"])
    except GenerationError as exc:
        raise click.BadParameter(str(exc), param_hint="'--trunc'") from None
    train = TrainConfig(
        arch=opts["arch"],
        width=opts["width"],
        weights=opts["weights"],
        input_size=opts["input_size"],
        epochs=opts["epochs"],
        batch=opts["batch"],
        lr=opts["lr"],
        patience=opts["patience"],
        val_fraction=opts["val_fraction"],
        augment=Augment(0.0, 0.0, 1.0) if opts["no_augment"] else Augment(),
        device=opts["device"],
        workers=opts["workers"] if opts["workers"] is not None else devices.default_workers(cap=4),
    )
    config = ExperimentConfig(
        real_train=opts["real_train"],
        real_test=opts["real_test"],
        sources=tuple(sources),
        out=opts["out"],
        counts=opts["counts"],
        repeats=opts["repeats"],
        seed=opts["seed"],
        train=train,
        gen_seed=opts["gen_seed"],
        truncation_psi=psi,
        n_resamples=opts["n_resamples"],
    )
    try:
        run_experiment(config, progress=not opts["quiet"], say=click.echo)
    except (
        ExperimentError,
        TrainingError,
        DatasetError,
        EvaluationError,
        GenerationError,
        ClassifierFileError,
    ) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"Wrote {RESULTS_MD}, {SUMMARY_CSV}, {RUNS_CSV} and {ROC_PNG} to {os.path.abspath(config.out)}"
    )
