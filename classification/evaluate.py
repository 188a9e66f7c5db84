"""Evaluate a trained classifier on a labelled test set.

Command (registered by ``classification/cli.py``)::

    python -m classification evaluate --model M --data TESTSET --out REPORT_DIR
        [--val-data VAL] [--threshold T] [--compare OTHER] [--bootstrap N] [--seed S]
        [--device cpu|cuda] [--batch B] [--workers W] [--quiet]

Inputs
    ``--model`` / ``--compare``: anything ``classification.model_file.load_classifier`` reads.
    ``--data`` / ``--val-data``: image folders or zips with ``dataset.json`` class labels, read by the
    core's :class:`stylegan2_ada.dataset.ImageDataset` (the same rules as ``train.py``). Images go
    through the classifier's own eval transform (``Classifier.scores`` on ``[-1, 1]`` images), in
    float32 on every device (no autocast, so reported figures do not depend on the device). When the
    dataset names its classes they must equal the model's ``class_names``; without names, label index k
    is taken to be the model's class k. A corrupt test image stops the evaluation with an error naming
    the file: a report on a silently shortened test set would not be the test set's.

Two classes (scores = probability of ``class_names[1]``, the positive class)
    * AUC with a stratified percentile bootstrap interval (:mod:`classification.stats`; 2000
      resamples and seed 0 by default);
    * the operating threshold (positive iff ``score >= threshold``), chosen in this order:
      ``"given"`` (``--threshold``), ``"val_youden"`` (maximum Youden J on ``--val-data``, scored by the
      same model), ``"model_validation_youden"`` (the Youden threshold the model file records for its
      own validation split, used only when the file also records the fingerprints of its training and
      validation sources and the test data are none of them: see :func:`model_validation_threshold`),
      else ``"test_youden"`` (Youden on the test set itself, flagged ``optimistic``: the
      sensitivity/specificity there are biased upwards and must not be reported as test performance);
    * sensitivity, specificity, PPV, NPV, F1 and accuracy at that threshold.

More classes (scores = softmax over ``class_names``)
    Per-class one-vs-rest AUCs and their macro mean, each with a bootstrap interval (joint resamples),
    and per-class rates of the argmax decision with its confusion matrix. ``--threshold`` and
    ``--val-data`` apply to two-class models only.

``--compare OTHER``
    Scores the same test set with a second model of the same classes: its AUC (bootstrap with the same
    seed, hence the same resamples) and the paired DeLong test of the two AUCs (per class, one-vs-rest,
    for more classes).

Outputs in ``REPORT_DIR`` (created; files of these names are replaced, each atomically)
    * ``predictions.csv``: one row per test image: ``path``, ``label``, the score column(s) of the model
      (``score`` or ``score_<class>``) and, with ``--compare``, of the other model (``compare_...``);
    * ``roc.png``: the ROC curve(s) with AUC and interval in the legend and the operating point;
    * ``metrics.json`` (written last: its presence means the report is complete): see
      :func:`evaluate` for its fields.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import click
import numpy as np
import scipy
import sklearn
import torch
from sklearn.metrics import confusion_matrix
from tqdm import tqdm

from classification import stats
from classification.roc import RocCurve, plot_roc
from stylegan2_ada.atomic import atomic_write, write_json_atomic
from stylegan2_ada.checkpoint import package_version, sha256_file
from stylegan2_ada.dataset import DatasetError, open_image_dataset
from stylegan2_ada.devices import DEVICES, default_workers, resolve_device
from stylegan2_ada.training.data import images_to_float

__all__ = [
    "EvaluationError",
    "REPORT_FORMAT",
    "evaluate",
    "evaluate_command",
    "model_validation_threshold",
    "predict_dataset",
    "seen_by_model",
]

REPORT_FORMAT = "spinegan-classifier-evaluation"
REPORT_FORMAT_VERSION = 1
METRICS_FILE = "metrics.json"
ROC_FILE = "roc.png"
PREDICTIONS_FILE = "predictions.csv"
THRESHOLD_RULE = "positive iff score >= threshold"
OPTIMISTIC_NOTE = (
    "threshold chosen on the test data itself (no --threshold or --val-data): the sensitivity, "
    "specificity and other rates at it are optimistically biased"
)


MODEL_THRESHOLD_NOTE = (
    "threshold chosen before seeing the test data, on the model's own validation split (recorded in the "
    "model file; the test data are not among its recorded sources): the rates at it are unbiased for "
    "this threshold, which a small validation split may however place far from the test set's best"
)
SEEN_DATA_WARNING = (
    "the test data are identical to one of the model's training or validation sources (same "
    "fingerprint): every figure here is measured on data the model has seen"
)


class EvaluationError(ValueError):
    """The evaluation cannot be done as asked; the message says why (and names the file, if any)."""


# ----------------------------------------------------------------------------------------------------
# Scoring a dataset.


def _class_names(classifier: Any) -> tuple[str, ...]:
    return tuple(str(name) for name in classifier.meta.class_names)


def _where(dataset: Any) -> str:
    return str(getattr(dataset, "path", None) or type(dataset).__name__)


def _label_indices(labels: torch.Tensor, n_classes: int, where: str) -> torch.Tensor:
    """One-hot float labels ``[B, D]`` -> class indices int64 [B]; EvaluationError for anything else."""
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise EvaluationError(f"{where}: class labels are needed (dataset.json, opened with use_labels=True)")
    if labels.shape[1] > n_classes:
        raise EvaluationError(f"{where}: labels have {labels.shape[1]} classes but the model has {n_classes}")
    one_hot = ((labels == 0) | (labels == 1)).all(dim=1) & (labels.sum(dim=1) == 1)
    if not bool(one_hot.all()):
        raise EvaluationError(f"{where}: labels must be class indices (one-hot), not float vectors")
    return labels.argmax(dim=1)


class _BatchReader(torch.utils.data.Dataset):
    """``reader[[i, j, ...]]`` -> ``(uint8 [B, C, H, W], float32 labels [B, D])`` of those dataset items,
    or, when reading one raised :class:`DatasetError`, its message (a str). Reading whole batches lets a
    DataLoader worker hand the message back as the dataset wrote it (it names the file) instead of a
    worker-process traceback."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | str:
        try:
            items = [self.dataset[i] for i in indices]
        except DatasetError as exc:
            return str(exc)
        images = np.stack([np.asarray(image) for image, _ in items])
        return images, np.stack([np.asarray(label, dtype=np.float32) for _, label in items])


def predict_dataset(
    classifier: Any,
    dataset: Any,
    *,
    batch: int = 64,
    device: str | torch.device | None = None,
    workers: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every item of ``dataset`` with ``classifier``.

    Args:
        classifier: a ``Classifier`` (``meta.class_names``, ``scores``, ``to``; see
            ``classification/model_file.py``).
        dataset: items ``(uint8 [C, H, W], one-hot float label [D])``, e.g. an ``ImageDataset`` opened
            with ``use_labels=True``; ``D <= len(class_names)``.
        batch: images per forward pass. device: ``None`` = CUDA when available. workers: DataLoader
            worker processes (0 = load in this process).
    Returns:
        ``(labels int64 [N], scores float64 [N])`` for two classes (probability of class 1) or
        ``(labels, scores float64 [N, K])`` for K classes, in dataset order.
    """
    device = resolve_device(device)
    model = classifier.to(device)
    n_classes = len(_class_names(model))
    where = _where(dataset)
    batches = torch.utils.data.BatchSampler(
        torch.utils.data.SequentialSampler(range(len(dataset))), batch, drop_last=False
    )
    loader = torch.utils.data.DataLoader(
        _BatchReader(dataset),
        batch_size=None,  # each item is a whole batch (see _BatchReader)
        sampler=batches,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    labels, scores = [], []
    with torch.inference_mode():
        for item in tqdm(loader, desc="Scoring", unit="batch", disable=not progress):
            if isinstance(item, str):
                raise DatasetError(item)
            images, label = item
            labels.append(_label_indices(torch.as_tensor(label), n_classes, where))
            out = model.scores(images_to_float(images, device)).float()
            expected = [len(images)] if n_classes == 2 else [len(images), n_classes]
            if list(out.shape) != expected:
                raise EvaluationError(
                    f"the classifier returned scores of shape {list(out.shape)}; expected {expected} "
                    f"for {n_classes} classes"
                )
            scores.append(out.cpu())
    if not labels:
        raise EvaluationError(f"{where}: no images to evaluate")
    y = torch.cat(labels).numpy().astype(np.int64)
    s = torch.cat(scores).numpy().astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise EvaluationError(
            f"the classifier returned {int(np.sum(~np.isfinite(s)))} non-finite scores on {where}"
        )
    return y, s


# ----------------------------------------------------------------------------------------------------
# Report pieces.


def _jsonable(value: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, tuples to lists, non-finite floats to None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def model_summary(classifier: Any, path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Where the model came from and what it says about itself (its file's SHA-256 and metadata)."""
    meta = classifier.meta
    meta_dict = dataclasses.asdict(meta) if dataclasses.is_dataclass(meta) else dict(vars(meta))
    return {
        "path": None if path is None else os.path.abspath(os.fspath(path)),
        "sha256": None if path is None else sha256_file(path),
        "meta": _jsonable(meta_dict),
    }


def data_summary(dataset: Any, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """The data source: path, counts per class, and a fingerprint of the exact (file, label) list."""
    relpaths = _relpaths(dataset, len(labels))
    fingerprint = hashlib.sha256(
        "".join(f"{rel}\t{int(lab)}\n" for rel, lab in zip(relpaths, labels)).encode("utf-8")
    ).hexdigest()
    counts = np.bincount(labels, minlength=len(class_names))
    return {
        "path": getattr(dataset, "path", None),
        "name": getattr(dataset, "name", None),
        "n": int(len(labels)),
        "n_per_class": {name: int(counts[k]) for k, name in enumerate(class_names)},
        "image_shape": _jsonable(getattr(dataset, "image_shape", None)),
        "dataset_class_names": _jsonable(getattr(dataset, "class_names", None)),
        "files_labels_sha256": fingerprint,
    }


def _relpaths(dataset: Any, n: int) -> list[str]:
    relpath = getattr(dataset, "relpath", None)
    return [relpath(i) for i in range(n)] if callable(relpath) else [str(i) for i in range(n)]


def check_class_names(classifier: Any, dataset: Any, role: str) -> None:
    """EvaluationError when ``dataset`` names its classes differently from ``classifier``."""
    names = getattr(dataset, "class_names", None)
    if names is not None and tuple(names) != _class_names(classifier):
        raise EvaluationError(
            f"{_where(dataset)}: the {role} data's class names {list(names)} differ from the model's "
            f"{list(_class_names(classifier))}"
        )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _auc_legend(name: str, ci: stats.AucInterval) -> str:
    return f"{name}: AUC {ci.auc:.3f} ({ci.confidence:.0%} CI {ci.low:.3f}-{ci.high:.3f})"


def _write_predictions(
    path: str, relpaths: Sequence[str], labels: np.ndarray, columns: Mapping[str, np.ndarray]
) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label", *columns])
    for i, rel in enumerate(relpaths):
        writer.writerow([rel, int(labels[i]), *(repr(float(col[i])) for col in columns.values())])
    data = text.getvalue().encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def _score_columns(prefix: str, scores: np.ndarray, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    if scores.ndim == 1:
        return {f"{prefix}score": scores}
    return {f"{prefix}score_{name}": scores[:, k] for k, name in enumerate(class_names)}


# ----------------------------------------------------------------------------------------------------
# Two classes and more.


def _source_fingerprints(classifier: Any) -> set[str] | None:
    """The SHA-256 fingerprints of every source the model file records, or ``None`` when it records none
    or not all of them (imported or hand-described files)."""
    sources = (getattr(classifier.meta, "training_data", None) or {}).get("sources") or []
    found = {s.get("sha256") for s in sources if isinstance(s, Mapping)}
    if not sources or len(found) == 0 or not all(isinstance(f, str) and f for f in found):
        return None
    return found


def seen_by_model(classifier: Any, dataset: Any) -> bool:
    """Whether ``dataset`` is identical (same fingerprint) to one of the sources the model file records
    it was trained or validated on. Reads every image of ``dataset`` once; ``False`` when the file records
    no fingerprints."""
    fingerprints = _source_fingerprints(classifier)
    if fingerprints is None:
        return False
    from classification.data import fingerprint

    return fingerprint(dataset) in fingerprints


def model_validation_threshold(classifier: Any) -> dict[str, Any] | None:
    """The Youden threshold the model file records for its validation split, as a
    ``"model_validation_youden"`` threshold record, or ``None`` when the file cannot vouch for it.

    Why it is sound: the threshold was fixed on real validation images, disjoint from the model's training
    images, before the test data were looked at, so sensitivity and specificity measured at it on
    independent test data are unbiased (the validation split also chose the epoch, which makes the
    *validation* figures optimistic, not the test figures). It needs the file to record the fingerprints
    of all its sources (what ``python -m classification train`` writes; imported or hand-described files
    do not, so nothing shows that their validation data are not the test data); the caller must also
    have checked with :func:`seen_by_model` that the test data are none of them. Identical sources are
    caught; a test set that merely shares images with a source is not (keep test images out of training).
    """
    meta = classifier.meta
    validation = getattr(meta, "validation", None) or {}
    value = validation.get("youden_threshold")
    usable = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    if not usable or _source_fingerprints(classifier) is None:
        return None
    sens, spec = validation.get("sensitivity_at_youden"), validation.get("specificity_at_youden")
    sources = meta.training_data["sources"]
    return {
        "value": float(value),
        "source": "model_validation_youden",
        "optimistic": False,
        "youden_j_on_validation": None if sens is None or spec is None else sens + spec - 1,
        "validation_auc": validation.get("auc"),
        "validation_data": {
            "n": validation.get("n"),
            "counts": meta.training_data.get("val_counts"),
            "split": meta.training_data.get("split"),
            "sources": [
                {k: s.get(k) for k in ("path", "role", "sha256")} for s in sources if s.get("kind") == "real"
            ],
        },
        "note": MODEL_THRESHOLD_NOTE,
    }


def _choose_threshold(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float | None,
    val: tuple[np.ndarray, np.ndarray, dict[str, Any]] | None,
    stored: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise EvaluationError(f"threshold must be in [0, 1] (a probability), got {threshold}")
        return {"value": float(threshold), "source": "given", "optimistic": False}
    if val is not None:
        val_labels, val_scores, val_info = val
        try:
            value, j = stats.youden_threshold(val_labels, val_scores)
        except ValueError as exc:
            raise EvaluationError(f"{val_info['path']}: cannot choose a threshold on it: {exc}") from None
        return {
            "value": value,
            "source": "val_youden",
            "optimistic": False,
            "youden_j_on_validation": j,
            "validation_auc": stats.auc(val_labels, val_scores),
            "validation_data": val_info,
        }
    if stored is not None:
        return stored
    value, j = stats.youden_threshold(labels, scores)
    return {
        "value": value,
        "source": "test_youden",
        "optimistic": True,
        "youden_j": j,
        "note": OPTIMISTIC_NOTE,
    }


def _binary_report(
    labels: np.ndarray,
    scores: np.ndarray,
    other: np.ndarray | None,
    *,
    names: tuple[str, str],
    threshold: float | None,
    val: tuple[np.ndarray, np.ndarray, dict[str, Any]] | None,
    stored: dict[str, Any] | None,
    boot: dict[str, Any],
) -> tuple[dict[str, Any], list[RocCurve]]:
    try:
        ci = stats.bootstrap_auc_ci(labels, scores, **boot)
    except ValueError as exc:
        raise EvaluationError(f"test data: {exc}") from None
    chosen = _choose_threshold(labels, scores, threshold, val, stored)
    at = stats.metrics_at_threshold(labels, scores, chosen["value"])
    fpr, tpr, _ = stats.roc_points(labels, scores)
    operating = (1.0 - at.specificity, at.sensitivity)  # both defined: the test set has both classes
    curves = [
        RocCurve(
            label=_auc_legend(names[0], ci),
            fpr=fpr,
            tpr=tpr,
            operating_point=operating,
            operating_label=f"threshold {chosen['value']:.3g} ({chosen['source']})",
        )
    ]
    report: dict[str, Any] = {
        "auc": ci.as_dict(),
        "threshold": {**chosen, "rule": THRESHOLD_RULE},
        "at_threshold": at.as_dict(),
    }
    if other is not None:
        other_ci = stats.bootstrap_auc_ci(labels, other, **boot)
        o_fpr, o_tpr, _ = stats.roc_points(labels, other)
        curves.append(RocCurve(label=_auc_legend(names[1], other_ci), fpr=o_fpr, tpr=o_tpr, linestyle="--"))
        report["compare"] = {
            "auc": other_ci.as_dict(),
            "delong": stats.delong_test(labels, scores, other).as_dict(),
        }
    return report, curves


def _argmax_rates(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    k = len(class_names)
    cm = confusion_matrix(labels, scores.argmax(axis=1), labels=list(range(k)))  # [true, predicted]
    per_class = {}
    for c, name in enumerate(class_names):
        tp = int(cm[c, c])
        fn, fp = int(cm[c].sum()) - tp, int(cm[:, c].sum()) - tp
        per_class[name] = stats.confusion_rates(tp, fp, len(labels) - tp - fn - fp, fn).as_dict()
    return {
        "decision": "argmax over class scores",
        "accuracy": float(np.trace(cm) / max(1, len(labels))),
        "confusion_matrix": {"rows": "true class", "columns": "predicted class", "counts": cm.tolist()},
        "per_class": per_class,
    }


def _one_vs_rest_curves(
    labels: np.ndarray,
    scores: np.ndarray,
    result: stats.MulticlassAuc,
    class_names: Sequence[str],
    model: str,
    linestyle: str,
) -> list[RocCurve]:
    """One ROC curve per class present in ``labels`` (class k against the rest, on column k)."""
    curves = []
    for k, ci in enumerate(result.per_class):
        if ci is not None:
            fpr, tpr, _ = stats.roc_points(labels == k, scores[:, k])
            curves.append(
                RocCurve(_auc_legend(f"{model} {class_names[k]}", ci), fpr, tpr, linestyle=linestyle)
            )
    return curves


def _multiclass_report(
    labels: np.ndarray,
    scores: np.ndarray,
    other: np.ndarray | None,
    *,
    class_names: Sequence[str],
    names: tuple[str, str],
    boot: dict[str, Any],
) -> tuple[dict[str, Any], list[RocCurve]]:
    try:
        mc = stats.one_vs_rest_auc_ci(labels, scores, **boot)
    except ValueError as exc:
        raise EvaluationError(f"test data: {exc}") from None
    present = [k for k, ci in enumerate(mc.per_class) if ci is not None]
    curves = _one_vs_rest_curves(labels, scores, mc, class_names, names[0], "-")
    report: dict[str, Any] = {
        "auc": mc.as_dict(class_names),
        "argmax": _argmax_rates(labels, scores, class_names),
    }
    if other is not None:
        other_mc = stats.one_vs_rest_auc_ci(labels, other, **boot)
        curves += _one_vs_rest_curves(labels, other, other_mc, class_names, names[1], "--")
        report["compare"] = {
            "auc": other_mc.as_dict(class_names),
            "delong_one_vs_rest": {
                class_names[k]: stats.delong_test(labels == k, scores[:, k], other[:, k]).as_dict()
                for k in present
            },
        }
    return report, curves


def _software() -> dict[str, str]:
    return {
        "spinegan": package_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
    }


def evaluate(
    classifier: Any,
    dataset: Any,
    out_dir: str | os.PathLike[str],
    *,
    model_path: str | os.PathLike[str] | None = None,
    val_dataset: Any = None,
    threshold: float | None = None,
    compare: Any = None,
    compare_path: str | os.PathLike[str] | None = None,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
    batch: int = 64,
    device: str | torch.device | None = None,
    workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``classifier`` on ``dataset``; write ``predictions.csv``, ``roc.png`` and ``metrics.json``
    to ``out_dir`` (see the module docstring) and return the metrics.

    ``model_path`` / ``compare_path``: the files the models came from (hashed into the report).
    ``val_dataset``: data to choose the Youden threshold on (two classes; not with ``threshold``).
    ``compare``: a second classifier with the same class names.

    ``metrics.json`` fields: ``format``, ``format_version``, ``created``, ``task`` ("binary" or
    "multiclass"), ``class_names``, ``positive_class`` (binary), ``model`` (path, sha256, meta),
    ``data`` (path, n, n_per_class, fingerprint), ``auc`` (value, interval, resamples, seed, method;
    per class and macro for more classes), ``threshold`` + ``at_threshold`` (binary) or ``argmax``
    (more classes), ``compare`` (its ``model``, ``auc`` and the DeLong result, when given), ``device``,
    ``software``, ``files``. Undefined numbers (e.g. PPV with no positive calls) are ``null``.

    Raises:
        EvaluationError: unusable labels or class names, a single-class test set, ``threshold`` or
            ``val_dataset`` with a multi-class model, both ``threshold`` and ``val_dataset``.
    """
    class_names = _class_names(classifier)
    binary = len(class_names) == 2
    if len(class_names) < 2:
        raise EvaluationError(f"the model has {len(class_names)} class names; it needs at least 2")
    if not binary and (threshold is not None or val_dataset is not None):
        raise EvaluationError(
            "a threshold (given or chosen on validation data) applies to two-class models only"
        )
    if threshold is not None and val_dataset is not None:
        raise EvaluationError("give either a threshold or validation data to choose one on, not both")
    check_class_names(classifier, dataset, "test")
    if val_dataset is not None:
        check_class_names(classifier, val_dataset, "validation")
    if compare is not None and _class_names(compare) != class_names:
        raise EvaluationError(
            f"the compared model's classes {list(_class_names(compare))} differ from the model's {list(class_names)}"
        )
    device = resolve_device(device)
    scoring = dict(batch=batch, device=device, workers=workers, progress=progress)
    boot = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)

    labels, scores = predict_dataset(classifier, dataset, **scoring)
    other = None
    if compare is not None:
        other_labels, other = predict_dataset(compare, dataset, **scoring)
        if not np.array_equal(other_labels, labels):  # the same dataset read twice: cannot happen
            raise RuntimeError(f"{_where(dataset)}: labels changed between two passes over the data")
    val = None
    if val_dataset is not None:
        val_labels, val_scores = predict_dataset(classifier, val_dataset, **scoring)
        val = (val_labels, val_scores, data_summary(val_dataset, val_labels, class_names))

    seen = seen_by_model(classifier, dataset)
    stored = None
    if binary and threshold is None and val is None and not seen:
        stored = model_validation_threshold(classifier)
    names = (_display_name(model_path, "model"), _display_name(compare_path, "compare"))
    if binary:
        body, curves = _binary_report(
            labels, scores, other, names=names, threshold=threshold, val=val, stored=stored, boot=boot
        )
    else:
        body, curves = _multiclass_report(
            labels, scores, other, class_names=class_names, names=names, boot=boot
        )

    metrics: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "task": "binary" if binary else "multiclass",
        "class_names": list(class_names),
        "positive_class": class_names[1] if binary else None,
        "model": model_summary(classifier, model_path),
        "data": data_summary(dataset, labels, class_names),
        **body,
    }
    if seen:
        metrics["warnings"] = [SEEN_DATA_WARNING]
    if compare is not None:
        metrics["compare"] = {"model": model_summary(compare, compare_path), **metrics["compare"]}
    metrics["device"] = str(device)
    metrics["software"] = _software()
    metrics["files"] = {"metrics": METRICS_FILE, "roc": ROC_FILE, "predictions": PREDICTIONS_FILE}

    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    columns = _score_columns("", scores, class_names)
    if other is not None:
        columns.update(_score_columns("compare_", other, class_names))
    _write_predictions(os.path.join(out, PREDICTIONS_FILE), _relpaths(dataset, len(labels)), labels, columns)
    title = f"ROC, {metrics['data']['name'] or 'test data'} (n = {len(labels)})"
    plot_roc(curves, os.path.join(out, ROC_FILE), title=title)
    metrics = _jsonable(metrics)
    write_json_atomic(os.path.join(out, METRICS_FILE), metrics)
    return metrics


def _display_name(path: str | os.PathLike[str] | None, default: str) -> str:
    return os.path.basename(os.fspath(path)) if path is not None else default


# ----------------------------------------------------------------------------------------------------
# Command line.


def summary_lines(metrics: Mapping[str, Any]) -> list[str]:
    """A few human-readable lines of a report (what the command prints)."""
    auc = metrics["auc"]
    lines = []
    if metrics["task"] == "binary":
        pct = round(100 * auc["confidence"])
        lines.append(
            f"AUC {auc['auc']:.3f} ({pct}% CI {auc['low']:.3f}-{auc['high']:.3f}, bootstrap n={auc['n_resamples']})"
        )
        thr, at = metrics["threshold"], metrics["at_threshold"]
        lines.append(
            f"threshold {thr['value']:.4g} ({thr['source']}): sensitivity {_fmt(at['sensitivity'])}, "
            f"specificity {_fmt(at['specificity'])}, F1 {_fmt(at['f1'])}"
        )
        if thr["optimistic"]:
            lines.append(f"warning: {OPTIMISTIC_NOTE}")
        for warning in metrics.get("warnings", []):
            lines.append(f"warning: {warning}")
        if "compare" in metrics:
            d = metrics["compare"]["delong"]
            lines.append(
                f"compare: AUC {d['auc_a']:.3f} vs {d['auc_b']:.3f}, difference {d['difference']:+.3f}, "
                f"paired DeLong p = {d['p_value']:.4g}"
            )
    else:
        macro = auc["macro"]
        lines.append(f"macro one-vs-rest AUC {macro['auc']:.3f} (CI {macro['low']:.3f}-{macro['high']:.3f})")
        for name, ci in auc["per_class"].items():
            lines.append(
                f"  {name}: "
                + (
                    "absent from the test data"
                    if ci is None
                    else f"AUC {ci['auc']:.3f} (CI {ci['low']:.3f}-{ci['high']:.3f})"
                )
            )
        lines.append(f"argmax accuracy {metrics['argmax']['accuracy']:.3f}")
        for name, d in metrics.get("compare", {}).get("delong_one_vs_rest", {}).items():
            lines.append(
                f"  compare {name}: AUC {d['auc_a']:.3f} vs {d['auc_b']:.3f}, paired DeLong p = {d['p_value']:.4g}"
            )
    return lines


def _load_model(path: str, device: torch.device, option: str) -> Any:
    # Imported here so that this module (and its tests) work without the model-file module.
    from classification.model_file import ClassifierFileError, load_classifier

    if not os.path.isfile(path):
        raise click.BadParameter(f"{path}: no such file", param_hint=option)
    try:
        return load_classifier(path, device=str(device))
    except ClassifierFileError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    except OSError as exc:
        raise click.BadParameter(f"{path}: cannot read: {exc.strerror or exc}", param_hint=option) from None


def _open_data(path: str, option: str) -> Any:
    try:
        return open_image_dataset(path, use_labels=True)
    except DatasetError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


@click.command("evaluate", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model",
    "model_path",
    required=True,
    metavar="M",
    help="Classifier to evaluate: our .safetensors model file, a TorchScript / torch.export file with its "
    "metadata, or a state dict of an allow-listed architecture.",
)
@click.option(
    "--data",
    "data_path",
    required=True,
    metavar="TESTSET",
    help="Held-out labelled test images: a folder or zip with dataset.json, as train.py reads.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    metavar="REPORT_DIR",
    help="Report folder: metrics.json, roc.png, predictions.csv (created; those files replaced).",
)
@click.option(
    "--val-data",
    "val_path",
    metavar="VAL",
    help="Labelled validation images to choose the threshold on (max Youden J). Two classes.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    metavar="T",
    help="Decision threshold on the positive-class probability (positive iff score >= T). "
    "Default: Youden on --val-data, else the model file's own validation Youden threshold (when it "
    "records its sources and the test data are none of them), else Youden on the test data (reported "
    "as optimistic).",
)
@click.option(
    "--compare",
    "compare_path",
    metavar="OTHER",
    help="A second classifier (same classes): its AUC and a paired DeLong test on the same test set.",
)
@click.option(
    "--bootstrap",
    "n_resamples",
    type=click.IntRange(min=100),
    default=stats.DEFAULT_RESAMPLES,
    show_default=True,
    metavar="N",
    help="Bootstrap resamples for the AUC confidence interval.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    metavar="S",
    default=0,
    show_default=True,
    help="Seed of the bootstrap resampling.",
)
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default=None,
    help="Device [default: cuda if available, else cpu]. Scoring is float32 on both.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    metavar="B",
    help="Images per forward pass.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    metavar="W",
    help="Image-loading worker processes [default: the CPUs, at most 4].",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate_command(
    model_path: str,
    data_path: str,
    out_dir: str,
    val_path: str | None,
    threshold: float | None,
    compare_path: str | None,
    n_resamples: int,
    seed: int,
    device: str | None,
    batch: int,
    workers: int | None,
    quiet: bool,
) -> None:
    """Evaluate a classifier on a labelled test set: AUC with a 95% bootstrap CI, sensitivity /
    specificity / F1 at a threshold, ROC curve, and (--compare) a paired DeLong test."""
    if threshold is not None and val_path is not None:
        raise click.UsageError("give --threshold or --val-data (to choose one on), not both")
    try:
        resolved = resolve_device(device)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--device'") from None
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise click.BadParameter(f"{out_dir}: exists and is not a folder", param_hint="'--out'")
    # Everything is opened and checked before the report folder is created.
    classifier = _load_model(model_path, resolved, "'--model'")
    other = _load_model(compare_path, resolved, "'--compare'") if compare_path else None
    test = _open_data(data_path, "'--data'")
    val = _open_data(val_path, "'--val-data'") if val_path else None
    try:
        metrics = evaluate(
            classifier,
            test,
            out_dir,
            model_path=model_path,
            val_dataset=val,
            threshold=threshold,
            compare=other,
            compare_path=compare_path,
            n_resamples=n_resamples,
            seed=seed,
            batch=batch,
            device=resolved,
            workers=default_workers(cap=4) if workers is None else workers,
            progress=not quiet,
        )
    except (EvaluationError, DatasetError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in summary_lines(metrics):
        click.echo(line)
    click.echo(f"Wrote {METRICS_FILE}, {ROC_FILE} and {PREDICTIONS_FILE} to {os.path.abspath(out_dir)}")
