"""The demo's stages, DICOM to report, and the runner that resumes them.

Every stage writes into its own folder ``OUTDIR/<NN-name>/`` and, when it has finished, a marker
``stage.json`` (written atomically: the stage's outputs, its seconds). A rerun skips every stage that has
its marker; a stage without one (interrupted) starts again from an empty folder. ``OUTDIR/demo.json``
records the preset and the device: a folder made with other settings is refused rather than mixed.

Stages (each calls the project's own command or function, nothing is reimplemented here):

==================== ===============================================================================
``01-phantoms``      ``python -m data_processing phantoms``: a phantom DICOM cohort + findings CSV
``02-dataset``       ``python -m data_processing convert``: PNGs + ``dataset.json`` + report
``03-split``         patients to a real training set (with patient ``groups``) and a real test set
``04-classifier``    :func:`classification.train.train_classifier` on the training set, evaluated on the
                     test set (:func:`classification.evaluate.evaluate`)
``05-gan-standard``  ``train.py --cond 1``: the standard conditional StyleGAN2-ADA, with ``--metrics``
                     (FID/KID at every snapshot on the classifier's features, ``--detector``)
``06-gan-spinegan``  the same with ``--plugin spinegan --classifier`` (the classifier's loss on the fakes)
``07-metrics``       loss and metric curves of both runs (:func:`stylegan2_ada.metrics.curves.plot_curves`)
``08-samples``       real and generated grids per class, the class-morph clip (``gen_video.py --morph``)
``09-experiment``    :func:`classification.experiment.run_experiment`: real vs standard GAN vs SpineGAN
``10-report``        ``OUTDIR/report.html`` (:mod:`showcase.report`)
==================== ===============================================================================
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from showcase.presets import Preset
from stylegan2_ada.atomic import atomic_write, write_json_atomic

__all__ = ["STAGES", "Demo", "DemoError", "Stage", "run_demo"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_FILE = "demo.json"
MARKER = "stage.json"
REPORT = "report.html"
DEMO_FORMAT = "spinegan-demo"
NETWORK_NAMES = {"05-gan-standard": "standard GAN", "06-gan-spinegan": "SpineGAN"}


class DemoError(RuntimeError):
    """A stage cannot run or failed; the message says which and why."""


@dataclass
class Demo:
    """One demo folder: where, with which preset and device, and how to talk."""

    outdir: Path
    preset: Preset
    device: str
    progress: bool = True
    say: Callable[[str], None] = print

    def folder(self, stage: str) -> Path:
        return self.outdir / stage

    def outputs(self, stage: str) -> dict[str, Any]:
        """The outputs a finished earlier stage recorded in its marker."""
        path = self.folder(stage) / MARKER
        try:
            return json.loads(path.read_text(encoding="utf-8"))["outputs"]
        except (OSError, ValueError, KeyError) as exc:
            raise DemoError(f"{path}: the stage's marker is missing or unreadable ({exc})") from None

    def quiet_flag(self, flag: str) -> list[str]:
        """``[flag]`` when progress bars are off, else ``[]``."""
        return [] if self.progress else [flag]

    def run(self, args: list[str], *, ok: tuple[int, ...] = (0,)) -> int:
        """Run ``python ARGS`` from the repository root (its output goes to ours); DemoError unless its
        exit status is in ``ok``."""
        cmd = [sys.executable, *args]
        self.say("$ " + shlex.join(["python", *args]))
        status = subprocess.run(cmd, cwd=REPO_ROOT).returncode
        if status not in ok:
            raise DemoError(f"`python {shlex.join(args)}` exited with status {status} (its message is above)")
        return status


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    run: Callable[[Demo], dict[str, Any]]


# --------------------------------------------------------------------------------------------------
# Data.


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def phantoms(demo: Demo) -> dict[str, Any]:
    p = demo.preset
    cohort = demo.folder("01-phantoms") / "cohort"
    args = [
        "-m",
        "data_processing",
        "phantoms",
        "--out",
        str(cohort),
        "--count",
        str(p.films),
        "--seed",
        str(p.seed),
    ]
    demo.run(args + demo.quiet_flag("--no-progress"))
    rows = _csv_rows(cohort / "annotations.csv")
    lesions: dict[str, set[str]] = {}
    for row in rows:
        found = lesions.setdefault(row["image_id"], set())
        if row["lesion_type"].strip().lower() != "no finding":
            found.add(row["lesion_type"])
    types: dict[str, int] = {}
    for found in lesions.values():
        for t in found:
            types[t] = types.get(t, 0) + 1
    return {
        "cohort": str(cohort),
        "dicom": str(cohort / "dicom"),
        "annotations": str(cohort / "annotations.csv"),
        "films": len(lesions),
        "patients": len({row["patient_id"] for row in rows}),
        "abnormal_films": sum(1 for found in lesions.values() if found),
        "lesion_types": dict(sorted(types.items())),
    }


def convert(demo: Demo) -> dict[str, Any]:
    cohort = demo.outputs("01-phantoms")
    out = demo.folder("02-dataset") / "images"
    workers = str(min(2, os.cpu_count() or 1))
    args = ["-m", "data_processing", "convert", "--dicom", cohort["dicom"], "--labels", cohort["annotations"]]
    args += ["--outdir", str(out), "--resolution", str(demo.preset.resolution), "--workers", workers]
    status = demo.run(
        args + demo.quiet_flag("--no-progress"), ok=(0, 1)
    )  # 1: some files failed; they are in the report, the rest goes on
    statuses: dict[str, int] = {}
    for row in _csv_rows(out / "conversion_report.csv"):
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    labels = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    if not labels.get("labels"):
        raise DemoError(f"{out}: the conversion produced no labelled image")
    return {"dataset": str(out), "statuses": statuses, "exit_status": status, "images": len(labels["labels"])}


def _copy_dataset(
    source: Path, entries: list[tuple[str, int, str]], class_names: list[str], dest: Path
) -> None:
    """Copy the images of ``entries`` ``(relpath, label, patient)`` from ``source`` to ``dest`` with an
    upstream-format ``dataset.json`` holding the labels, class names and patient ``groups``."""
    for rel, _, _ in entries:
        data = (source / rel).read_bytes()
        atomic_write(dest / rel, lambda f, d=data: f.write(d))
    write_json_atomic(
        dest / "dataset.json",
        {
            "labels": [[rel, label] for rel, label, _ in entries],
            "class_names": class_names,
            "groups": {rel: patient for rel, _, patient in entries},
        },
    )


def _films(demo: Demo) -> tuple[Path, list[str], list[tuple[str, int, str]]]:
    """The converted dataset's folder, class names and ``(relpath, label, patient id)`` per image: the
    conversion report maps each PNG to its image id, the findings CSV each image id to its patient."""
    dataset = Path(demo.outputs("02-dataset")["dataset"])
    annotations = Path(demo.outputs("01-phantoms")["annotations"])
    patient_of = {row["image_id"]: row["patient_id"] for row in _csv_rows(annotations)}
    report = _csv_rows(dataset / "conversion_report.csv")
    image_of = {row["output"]: row["image_id"] for row in report if row["output"]}
    doc = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    entries = []
    for rel, label in doc["labels"]:
        if image_of.get(rel) not in patient_of:
            raise DemoError(f"{dataset}: {rel} has no patient in the conversion report and {annotations}")
        entries.append((rel, int(label), patient_of[image_of[rel]]))
    return dataset, doc.get("class_names") or ["normal", "abnormal"], entries


def split(demo: Demo) -> dict[str, Any]:
    """Patients (not films) to the training or the test set, stratified by class: scikit-learn's
    StratifiedGroupKFold with the patients as groups, the first of ``round(1 / test_fraction)`` folds
    held out for testing."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    dataset, class_names, entries = _films(demo)
    labels = np.array([label for _, label, _ in entries])
    folds = max(2, round(1 / demo.preset.test_fraction))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=demo.preset.seed)
    train_idx, test_idx = next(splitter.split(labels, labels, [patient for _, _, patient in entries]))
    out: dict[str, Any] = {"class_names": class_names, "method": f"StratifiedGroupKFold, 1 of {folds} folds"}
    for part, index in (("train", train_idx), ("test", test_idx)):
        chosen = [entries[i] for i in index]
        _copy_dataset(dataset, chosen, class_names, demo.folder("03-split") / part)
        out[part] = str(demo.folder("03-split") / part)
        out[f"{part}_patients"] = len({patient for _, _, patient in chosen})
        counts = np.bincount([label for _, label, _ in chosen], minlength=len(class_names))
        out[f"{part}_counts"] = {name: int(counts[k]) for k, name in enumerate(class_names)}
    return out


# --------------------------------------------------------------------------------------------------
# Models.


def classifier(demo: Demo) -> dict[str, Any]:
    from classification.evaluate import evaluate
    from classification.model_file import save_classifier
    from classification.train import TrainConfig, train_classifier
    from stylegan2_ada.dataset import open_image_dataset

    p, data = demo.preset, demo.outputs("03-split")
    config = TrainConfig(
        data=(data["train"],),
        arch="small",
        epochs=p.classifier_epochs,
        batch=p.classifier_batch,
        patience=0,  # no early stop: the small CNN's validation AUC stays near 0.5 for 20-odd epochs
        seed=p.seed,
        device=demo.device,
    )
    result = train_classifier(config, progress=demo.progress)
    path = demo.folder("04-classifier") / "classifier.safetensors"
    save_classifier(path, result.classifier)
    metrics = evaluate(
        result.classifier,
        open_image_dataset(data["test"], use_labels=True),
        demo.folder("04-classifier") / "eval",
        model_path=path,
        n_resamples=p.bootstrap,
        device=demo.device,
        progress=demo.progress,
    )
    meta = result.classifier.meta
    return {
        "model": str(path),
        "validation_auc": meta.validation["auc"],
        "best_epoch": meta.training["best_epoch"],
        "test_auc": metrics["auc"],
        "roc": str(demo.folder("04-classifier") / "eval" / "roc.png"),
    }


def _gan(demo: Demo, stage: str, extra: list[str]) -> dict[str, Any]:
    """``train.py`` into the stage's folder; the metrics are computed at every snapshot (``--metrics``)
    on the classifier's features (a classifier model file is a detector, docs/metrics.md)."""
    p = demo.preset
    folder = demo.folder(stage)
    args = [str(REPO_ROOT / "train.py"), "--outdir", str(folder), "--data", demo.outputs("03-split")["train"]]
    args += ["--cond", "1", "--mirror", "1", "--kimg", str(p.gan_kimg), "--tick", str(p.gan_tick)]
    args += ["--snap", str(p.gan_snap), "--seed", str(p.seed), "--device", demo.device]
    args += ["--metrics", ",".join(p.metrics), "--metrics-num", str(p.metrics_num)]
    args += ["--detector", demo.outputs("04-classifier")["model"], *shlex.split(p.gan_options)]
    demo.run(args + extra)
    runs = sorted(d for d in folder.iterdir() if d.is_dir() and d.name[:5].isdigit())
    if len(runs) != 1:
        raise DemoError(f"{folder}: expected one run folder, found {[d.name for d in runs]}")
    snapshots = sorted(runs[0].glob("network-snapshot-*.safetensors"))
    if not snapshots:
        raise DemoError(f"{runs[0]}: the run saved no snapshot")
    return {
        "run": str(runs[0]),
        "snapshots": len(snapshots),
        "final": str(snapshots[-1]),
        "name": NETWORK_NAMES[stage],
    }


def gan_standard(demo: Demo) -> dict[str, Any]:
    return _gan(demo, "05-gan-standard", [])


def gan_spinegan(demo: Demo) -> dict[str, Any]:
    weight = str(demo.preset.domain_weight)
    model = demo.outputs("04-classifier")["model"]
    return _gan(
        demo, "06-gan-spinegan", ["--plugin", "spinegan", "--classifier", model, "--domain-weight", weight]
    )


# --------------------------------------------------------------------------------------------------
# Metrics, samples.

#: The training statistics plotted: G and D losses, and the spinegan plugin's term and agreement.
_LOSS_STATS = ("Loss/G/loss", "Loss/D/loss", "Loss/spinegan/domain", "Domain/agreement")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def metrics(demo: Demo) -> dict[str, Any]:
    """The curves of both runs (metric-*.jsonl and stats.jsonl, written by train.py) and the last values."""
    from stylegan2_ada.metrics.curves import plot_curves

    p = demo.preset
    runs = [demo.outputs(s) for s in NETWORK_NAMES]
    dirs, labels = [r["run"] for r in runs], [r["name"] for r in runs]
    folder = demo.folder("07-metrics")
    plot_curves(
        dirs, folder / "metrics.png", metrics=None, stats=[], labels=labels, title="Metrics over training"
    )
    plot_curves(
        dirs, folder / "losses.png", metrics=[], stats=_LOSS_STATS, labels=labels, title="Training losses"
    )
    final, seconds, detector = {}, {}, None
    for run in runs:
        last = {name: _jsonl(Path(run["run"]) / f"metric-{name}.jsonl")[-1] for name in p.metrics}
        final[run["name"]] = {name: line["results"][name] for name, line in last.items()}
        detector = next(iter(last.values()))["detector"]
        timing = [
            line["Timing/metrics_sec"]
            for line in _jsonl(Path(run["run"]) / "stats.jsonl")
            if "Timing/metrics_sec" in line
        ]
        seconds[run["name"]] = round(sum(t["mean"] if isinstance(t, dict) else t for t in timing), 1)
    return {
        "metrics_png": str(folder / "metrics.png"),
        "losses_png": str(folder / "losses.png"),
        "final": final,
        "detector": detector,
        "seconds_in_training": seconds,
    }


def _grid(images: Any, columns: int, path: Path) -> None:
    """uint8 images ``[N, C, H, W]`` as one PNG grid of ``columns`` columns."""
    from stylegan2_ada.training.grids import save_image_grid

    save_image_grid(images, path, (columns, len(images) // columns), drange=(0, 255))


def _real_grids(demo: Demo, n: int) -> dict[str, dict[str, str]]:
    """Per class name, ``{"real": PNG}``: ``n`` training images of the class (a seeded random draw)."""
    import numpy as np

    from stylegan2_ada.dataset import open_image_dataset

    data = demo.outputs("03-split")
    real = open_image_dataset(data["train"], use_labels=True)
    rng = np.random.default_rng(demo.preset.seed)
    grids = {}
    for k, name in enumerate(data["class_names"]):
        members = rng.permutation(np.flatnonzero(real.raw_labels == k))[:n]
        if len(members) < n:
            raise DemoError(
                f"{data['train']}: only {len(members)} images of class {name}; the grid needs {n}"
            )
        path = demo.folder("08-samples") / f"real-{k}.png"
        _grid(np.stack([real[int(i)][0] for i in members]), demo.preset.grid_columns, path)
        grids[name] = {"real": str(path)}
    return grids


def _fake_grids(demo: Demo, stage: str, n: int) -> dict[str, str]:
    """Per class name, a PNG of the images of seeds ``0..n-1`` of the stage's final network."""
    import numpy as np

    from stylegan2_ada import checkpoint as ckpt
    from stylegan2_ada.generation import class_label, select_generator, synthesize

    _, G = select_generator(ckpt.load_checkpoint(demo.outputs(stage)["final"], demo.device).networks)
    grids = {}
    for k, name in enumerate(demo.outputs("03-split")["class_names"]):
        label = class_label(G.c_dim, k)
        fakes = np.stack([img for _, img in synthesize(G, list(range(n)), label, device=demo.device)])
        path = demo.folder("08-samples") / f"{stage[3:]}-{k}.png"
        _grid(fakes.transpose(0, 3, 1, 2), demo.preset.grid_columns, path)  # [N, H, W, C] -> [N, C, H, W]
        grids[name] = str(path)
    return grids


def samples(demo: Demo) -> dict[str, Any]:
    """Real and generated grids per class, and the class-morph clip of the SpineGAN network."""
    p = demo.preset
    n = p.grid_columns * p.grid_rows
    grids = _real_grids(demo, n)
    for stage, net_name in NETWORK_NAMES.items():
        for name, path in _fake_grids(demo, stage, n).items():
            grids[name][net_name] = path
    video = demo.folder("08-samples") / "morph.mp4"
    args = ["gen_video.py", "--network", demo.outputs("06-gan-spinegan")["final"], "--seeds", p.video_seeds]
    args += ["--grid", p.video_grid, "--morph", "0,1,0", "--w-frames", str(p.video_frames), "--fps", "24"]
    demo.run(args + ["--device", demo.device, "--output", str(video)] + demo.quiet_flag("--quiet"))
    class_names = demo.outputs("03-split")["class_names"]
    return {
        "grids": grids,
        "video": str(video),
        "video_network": NETWORK_NAMES["06-gan-spinegan"],
        "video_classes": [class_names[k] for k in (0, 1, 0)],
        "seeds": list(range(n)),
    }


def experiment(demo: Demo) -> dict[str, Any]:
    from classification.experiment import ExperimentConfig, SourceSpec, run_experiment
    from classification.train import TrainConfig

    p, data = demo.preset, demo.outputs("03-split")
    sources = tuple(
        SourceSpec(name, network=demo.outputs(stage)["final"]) for stage, name in NETWORK_NAMES.items()
    )
    config = ExperimentConfig(
        real_train=data["train"],
        real_test=data["test"],
        sources=sources,
        out=str(demo.folder("09-experiment")),
        counts=p.counts,
        repeats=p.repeats,
        seed=p.seed,
        train=TrainConfig(
            arch="small", epochs=p.experiment_epochs, batch=p.classifier_batch, device=demo.device
        ),
        n_resamples=p.bootstrap,
    )
    manifest = run_experiment(config, progress=demo.progress, say=demo.say)
    folder = demo.folder("09-experiment")
    return {
        "folder": str(folder),
        "summary": str(folder / "summary.csv"),
        "roc": str(folder / "roc.png"),
        "cells": len(manifest["cells"]),
    }


def report(demo: Demo) -> dict[str, Any]:
    from showcase.report import write_report

    path = write_report(demo)
    return {"report": str(path)}


STAGES: tuple[Stage, ...] = (
    Stage("01-phantoms", "Phantom DICOM cohort", phantoms),
    Stage("02-dataset", "DICOM to PNG conversion", convert),
    Stage("03-split", "Split by patient", split),
    Stage("04-classifier", "Abnormality classifier", classifier),
    Stage("05-gan-standard", "Conditional GAN, standard", gan_standard),
    Stage("06-gan-spinegan", "Conditional GAN with the spinegan plugin", gan_spinegan),
    Stage("07-metrics", "Metrics over training", metrics),
    Stage("08-samples", "Samples per class, class-morph clip", samples),
    Stage("09-experiment", "Synthetic-learning experiment", experiment),
    Stage("10-report", "Report", report),
)


# --------------------------------------------------------------------------------------------------
# The runner.


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The error types that mean bad input or a failed step, not a bug (imported lazily: start-up time)."""
    from classification.evaluate import EvaluationError
    from classification.experiment import ExperimentError
    from classification.model_file import ClassifierFileError
    from classification.train import TrainingError
    from stylegan2_ada.checkpoint import CheckpointError
    from stylegan2_ada.dataset import DatasetError
    from stylegan2_ada.generation import GenerationError
    from stylegan2_ada.metrics.curves import CurvesError
    from stylegan2_ada.metrics.extractors import DetectorError
    from stylegan2_ada.metrics.features import MetricError

    return (
        DemoError,
        EvaluationError,
        ExperimentError,
        ClassifierFileError,
        TrainingError,
        CheckpointError,
        DatasetError,
        GenerationError,
        CurvesError,
        DetectorError,
        MetricError,
        OSError,
    )


def _settings(preset: Preset, device: str) -> dict[str, Any]:
    return {"format": DEMO_FORMAT, "preset": preset.as_dict(), "device": device}


def _claim(outdir: Path, settings: dict[str, Any]) -> None:
    """Make ``outdir`` a demo folder of these settings, or check that it is one; DemoError otherwise."""
    record = outdir / DEMO_FILE
    if record.is_file():
        try:
            found = json.loads(record.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DemoError(f"{record}: unreadable ({exc})") from None
        found = {k: found.get(k) for k in settings}
        if json.loads(json.dumps(settings)) != found:
            preset = (found.get("preset") or {}).get("name")
            raise DemoError(
                f"{outdir} holds a demo made with other settings (preset {preset}, device {found.get('device')}); "
                "use another --outdir, or the same preset and device to resume it"
            )
        return
    if outdir.exists() and (not outdir.is_dir() or any(outdir.iterdir())):
        raise DemoError(
            f"{outdir} exists and is not a demo folder (no {DEMO_FILE}); give a new or empty --outdir"
        )
    outdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, settings)


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children so far (user + system)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def run_demo(demo: Demo, stages: tuple[Stage, ...] = STAGES) -> list[dict[str, Any]]:
    """Run (or resume) the stages in order; returns each stage's marker (``seconds``, ``skipped``, ...)."""
    demo.outdir = demo.outdir.resolve()
    _claim(demo.outdir, _settings(demo.preset, demo.device))
    done = []
    for i, stage in enumerate(stages, 1):
        folder = demo.folder(stage.name)
        marker = folder / MARKER
        head = f"[{i}/{len(stages)}] {stage.title}"
        if marker.is_file():
            record = json.loads(marker.read_text(encoding="utf-8"))
            demo.say(f"{head}: finished earlier ({_fmt(record['seconds'])}), skipped")
            done.append({**record, "skipped": True})
            continue
        demo.say(f"{head} ...")
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted attempt of this stage: start it again from nothing
        folder.mkdir(parents=True)
        started, cpu = time.perf_counter(), _cpu_seconds()
        try:
            outputs = stage.run(demo)
        except _expected_errors() as exc:
            raise DemoError(f"stage {stage.name} ({stage.title}) failed: {exc}") from None
        record = {
            "stage": stage.name,
            "title": stage.title,
            "seconds": round(time.perf_counter() - started, 2),
            "cpu_seconds": round(_cpu_seconds() - cpu, 2),
            "load_average": round(os.getloadavg()[0], 2),  # 1-minute, at the end: how busy the machine was
            "outputs": outputs,
        }
        write_json_atomic(marker, record)
        demo.say(f"{head}: done in {_fmt(record['seconds'])}")
        done.append({**record, "skipped": False})
    return done
