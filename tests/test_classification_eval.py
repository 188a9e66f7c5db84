"""Tests for classification.evaluate (and classification.roc): scoring a dataset, metrics.json, roc.png,
predictions.csv, thresholds, --compare, errors, and the `evaluate` command.

The classifier is a stand-in that follows the contract of ``classification/model_file.py``
(``meta.class_names``, ``scores``, ``to``): a fixed module whose score is a known function of the mean
brightness of the image, so every expected number is computed here independently from the pixels the
test wrote. The data are tiny generated folders of 16x16 PNGs with ``dataset.json``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from classification import evaluate as ev
from classification import stats
from stylegan2_ada.dataset import DatasetError, open_image_dataset

BINARY = ("normal", "abnormal")
THREE = ("low", "mid", "high")
ALL = (slice(None), slice(None))
CORNER = (slice(0, 1), slice(0, 2))  # two pixels: a much noisier model


# ---------------------------------------------------------------------------------------------------
# A stand-in classifier and generated data.


@dataclass(frozen=True)
class StandInMeta:
    class_names: tuple[str, ...]
    arch: str = "stand-in"
    input_size: int = 16
    in_channels: int = 1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)


class BrightnessNet(nn.Module):
    """[N, C, H, W] in [-1, 1] -> logits. Two classes: [N, 1] = gain * (mean - 0). K classes: [N, K] =
    -gain * (mean - centre_k)^2. ``region`` (rows, columns) restricts the mean (a weaker model)."""

    def __init__(self, n_classes: int, gain: float, region: tuple[slice, slice] = ALL) -> None:
        super().__init__()
        self.n_classes, self.gain, self.region = n_classes, gain, region
        self.register_buffer("centres", torch.linspace(-0.6, 0.6, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x[:, :, self.region[0], self.region[1]].mean(dim=(1, 2, 3))
        if self.n_classes == 2:
            return (self.gain * m)[:, None]
        return -self.gain * (m[:, None] - self.centres[None]) ** 2


class StandInClassifier:
    """The Classifier contract (classification-api.md): eval mode, frozen, scores from logits."""

    def __init__(self, class_names=BINARY, gain: float = 6.0, region: tuple[slice, slice] = ALL) -> None:
        self.meta = StandInMeta(tuple(class_names))
        self.net = BrightnessNet(len(class_names), gain, region).eval().requires_grad_(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return images  # the test images are already 16x16, one channel

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images))

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.logits(images)
        return torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)

    def to(self, device) -> StandInClassifier:
        self.net.to(device)
        return self


def expected_scores(images: np.ndarray, n_classes: int, gain: float = 6.0, region=ALL) -> np.ndarray:
    """What the stand-in must output, computed in numpy from the uint8 pixels [N, H, W]."""
    m = (images[:, region[0], region[1]].astype(np.float64) / 127.5 - 1).mean(axis=(1, 2))
    if n_classes == 2:
        return 1 / (1 + np.exp(-gain * m))
    logits = -gain * (m[:, None] - np.linspace(-0.6, 0.6, n_classes)[None]) ** 2
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_dataset(
    root: Path, labels: list[int], *, class_names=BINARY, seed: int = 0, named: bool = True
) -> np.ndarray:
    """Write one 16x16 grayscale PNG per label (brighter for higher classes, overlapping) and
    dataset.json; return the pixels uint8 [N, 16, 16] in the dataset's (sorted) order."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    k = len(class_names)
    entries, images = [], []
    for i, label in enumerate(labels):
        level = 128 + (label - (k - 1) / 2) * 50 + rng.normal(0, 30)
        img = np.clip(rng.normal(level, 40, (16, 16)), 0, 255).astype(np.uint8)
        rel = f"c{label}/img{i:03d}.png"
        (root / rel).parent.mkdir(exist_ok=True)
        Image.fromarray(img, mode="L").save(root / rel)
        entries.append([rel, label])
        images.append((rel, img))
    doc = {"labels": entries}
    if named:
        doc["class_names"] = list(class_names)
    (root / "dataset.json").write_text(json.dumps(doc))
    return np.stack([img for _, img in sorted(images)])


def labelled(root: Path, labels: list[int], **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """make_dataset, returning (labels in dataset order, images)."""
    images = make_dataset(root, labels, **kwargs)
    rels = [f"c{lab}/img{i:03d}.png" for i, lab in enumerate(labels)]
    order = np.argsort(rels)
    return np.asarray(labels)[order], images


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


# ---------------------------------------------------------------------------------------------------
# Scoring.


def test_predict_dataset_gives_labels_and_known_scores(tmp_path):
    y, images = labelled(tmp_path / "test", [0, 1, 1, 0, 1, 0, 0])
    ds = open_image_dataset(tmp_path / "test", use_labels=True)
    labels, scores = ev.predict_dataset(StandInClassifier(), ds, batch=3, device="cpu")
    assert labels.dtype == np.int64 and labels.tolist() == y.tolist()
    assert scores.shape == (7,) and scores == pytest.approx(expected_scores(images, 2), abs=1e-6)
    three_y, three_images = labelled(tmp_path / "three", [0, 1, 2, 2, 1], class_names=THREE)
    ds3 = open_image_dataset(tmp_path / "three", use_labels=True)
    labels3, scores3 = ev.predict_dataset(StandInClassifier(THREE), ds3, batch=2, device="cpu")
    assert labels3.tolist() == three_y.tolist() and scores3.shape == (5, 3)
    assert scores3 == pytest.approx(expected_scores(three_images, 3), abs=1e-6)


def test_predict_dataset_refuses_unlabelled_or_vector_labels(tmp_path):
    make_dataset(tmp_path / "d", [0, 1, 0])
    unlabelled = open_image_dataset(tmp_path / "d", use_labels=False)
    with pytest.raises(ev.EvaluationError, match="class labels are needed"):
        ev.predict_dataset(StandInClassifier(), unlabelled, device="cpu")
    doc = json.loads((tmp_path / "d" / "dataset.json").read_text())
    doc = {"labels": [[rel, [0.3, 0.7]] for rel, _ in doc["labels"]]}
    (tmp_path / "d" / "dataset.json").write_text(json.dumps(doc))
    vectors = open_image_dataset(tmp_path / "d", use_labels=True)
    with pytest.raises(ev.EvaluationError, match="one-hot"):
        ev.predict_dataset(StandInClassifier(), vectors, device="cpu")


def corrupt_body(png: Path) -> None:
    """Keep the valid header (so the dataset opens) but garble the image data after it."""
    data = png.read_bytes()
    png.write_bytes(data[:40] + b"\0" * 30 + data[70:])


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_image_is_reported_by_name_without_a_worker_traceback(tmp_path, workers):
    labelled(tmp_path / "d", [0, 1, 0, 1, 0, 1])
    corrupt_body(tmp_path / "d" / "c1" / "img003.png")
    ds = open_image_dataset(tmp_path / "d", use_labels=True)
    with pytest.raises(DatasetError) as caught:
        ev.predict_dataset(StandInClassifier(), ds, batch=2, device="cpu", workers=workers)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "d" / "c1" / "img003.png")) and "corrupt" in message
    assert "Traceback" not in message and "\n" not in message


# ---------------------------------------------------------------------------------------------------
# Reports.


def test_evaluate_binary_writes_metrics_roc_and_predictions(tmp_path):
    y, images = labelled(tmp_path / "test", [i % 2 for i in range(60)])
    model_file = tmp_path / "model.bin"
    model_file.write_bytes(b"stand-in weights")
    ds = open_image_dataset(tmp_path / "test", use_labels=True)
    out = tmp_path / "report"
    returned = ev.evaluate(
        StandInClassifier(), ds, out, model_path=model_file, n_resamples=500, seed=3, device="cpu"
    )

    metrics = read_metrics(out)
    assert metrics == returned
    _, s = ev.predict_dataset(StandInClassifier(), ds, device="cpu")  # the model's own (float32) scores
    assert s == pytest.approx(expected_scores(images, 2), abs=1e-6)
    assert metrics["task"] == "binary" and metrics["positive_class"] == "abnormal"
    assert metrics["class_names"] == list(BINARY)
    auc = metrics["auc"]
    assert auc["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert 0.6 < auc["auc"] < 1.0  # overlapping classes: a real, imperfect AUC
    assert auc["low"] < auc["auc"] < auc["high"]
    assert (auc["n_resamples"], auc["seed"], auc["confidence"]) == (500, 3, 0.95)
    # No threshold and no validation data: Youden on the test data, flagged optimistic.
    thr = metrics["threshold"]
    assert thr["source"] == "test_youden" and thr["optimistic"] is True and "optimistic" in thr["note"]
    fpr, tpr, cuts = roc_curve(y, s, drop_intermediate=False)
    assert thr["value"] == pytest.approx(cuts[1:][np.argmax((tpr - fpr)[1:])], rel=1e-6)
    called = s >= thr["value"]
    at = metrics["at_threshold"]
    assert at["tp"] == int(np.sum(called & (y == 1))) and at["fn"] == int(np.sum(~called & (y == 1)))
    assert at["sensitivity"] == pytest.approx(np.mean(called[y == 1]))
    assert at["specificity"] == pytest.approx(np.mean(~called[y == 0]))
    # Provenance.
    assert metrics["data"]["n"] == 60 and metrics["data"]["n_per_class"] == {"normal": 30, "abnormal": 30}
    assert metrics["data"]["path"] == str((tmp_path / "test").resolve())
    assert metrics["model"]["path"] == str(model_file.resolve())
    assert metrics["model"]["sha256"] == hashlib.sha256(b"stand-in weights").hexdigest()
    assert metrics["model"]["meta"]["class_names"] == list(BINARY) and metrics["device"] == "cpu"
    # The figure decodes; the predictions file has one row per image.
    with Image.open(out / "roc.png") as png:
        png.load()
        assert png.format == "PNG" and png.size == (720, 720)
        assert np.asarray(png.convert("L")).std() > 10  # not blank
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["path"] for r in rows] == [ds.relpath(i) for i in range(60)]
    assert [int(r["label"]) for r in rows] == y.tolist()
    assert [float(r["score"]) for r in rows] == s.tolist()  # written exactly
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_threshold_given_or_chosen_on_validation_data(tmp_path):
    labelled(tmp_path / "test", [i % 2 for i in range(40)], seed=1)
    val_y, val_images = labelled(tmp_path / "val", [i % 2 for i in range(40)], seed=2)
    test = open_image_dataset(tmp_path / "test", use_labels=True)
    val = open_image_dataset(tmp_path / "val", use_labels=True)

    given = ev.evaluate(
        StandInClassifier(), test, tmp_path / "given", threshold=0.5, n_resamples=200, device="cpu"
    )
    assert given["threshold"]["source"] == "given" and given["threshold"]["value"] == 0.5
    assert given["threshold"]["optimistic"] is False

    chosen = ev.evaluate(
        StandInClassifier(), test, tmp_path / "val_youden", val_dataset=val, n_resamples=200, device="cpu"
    )
    thr = chosen["threshold"]
    val_scores = expected_scores(val_images, 2)
    fpr, tpr, cuts = roc_curve(val_y, val_scores, drop_intermediate=False)
    assert thr["source"] == "val_youden" and thr["optimistic"] is False
    assert thr["value"] == pytest.approx(cuts[1:][np.argmax((tpr - fpr)[1:])], rel=1e-6)
    assert thr["validation_auc"] == pytest.approx(roc_auc_score(val_y, val_scores), abs=1e-9)
    assert thr["validation_data"]["n"] == 40
    # Rates at a threshold taken from elsewhere differ from those at the test set's own best threshold.
    own = ev.evaluate(StandInClassifier(), test, tmp_path / "own", n_resamples=200, device="cpu")
    assert own["threshold"]["value"] != thr["value"]

    with pytest.raises(ev.EvaluationError, match="not both"):
        ev.evaluate(StandInClassifier(), test, tmp_path / "x", threshold=0.5, val_dataset=val, device="cpu")
    assert not (tmp_path / "x").exists()


def test_compare_reports_delong_p_one_for_the_same_ranking_and_a_difference_otherwise(tmp_path):
    y, images = labelled(tmp_path / "test", [i % 2 for i in range(160)], seed=4)
    test = open_image_dataset(tmp_path / "test", use_labels=True)
    # Another gain is another model with the same ranking of the images: identical AUC, p = 1.
    same = ev.evaluate(
        StandInClassifier(),
        test,
        tmp_path / "same",
        compare=StandInClassifier(gain=2.0),
        n_resamples=300,
        device="cpu",
    )
    delong = same["compare"]["delong"]
    assert delong["p_value"] == pytest.approx(1.0) and delong["difference"] == pytest.approx(0.0, abs=1e-12)
    assert same["compare"]["auc"]["auc"] == pytest.approx(same["auc"]["auc"])
    # The same bootstrap resamples (same seed): the intervals are identical too.
    assert (same["compare"]["auc"]["low"], same["compare"]["auc"]["high"]) == (
        same["auc"]["low"],
        same["auc"]["high"],
    )

    weaker = StandInClassifier(gain=6.0, region=CORNER)
    result = ev.evaluate(
        StandInClassifier(),
        test,
        tmp_path / "cmp",
        compare=weaker,
        compare_path=None,
        n_resamples=300,
        device="cpu",
    )
    _, own = ev.predict_dataset(StandInClassifier(), test, device="cpu")
    _, weak = ev.predict_dataset(weaker, test, device="cpu")
    assert weak == pytest.approx(expected_scores(images, 2, region=CORNER), abs=1e-6)
    expected = stats.delong_test(y, own, weak)
    got = result["compare"]["delong"]
    assert got["auc_a"] == pytest.approx(expected.auc_a, abs=1e-9)
    assert got["auc_b"] == pytest.approx(expected.auc_b, abs=1e-9)
    assert got["p_value"] == pytest.approx(expected.p_value, rel=1e-9) and got["p_value"] < 0.05
    assert got["auc_a"] > got["auc_b"]
    rows = list(csv.DictReader((tmp_path / "cmp" / "predictions.csv").open()))
    assert set(rows[0]) == {"path", "label", "score", "compare_score"}
    with Image.open(tmp_path / "cmp" / "roc.png") as png:
        png.load()


def test_evaluate_multiclass_one_vs_rest(tmp_path):
    y, images = labelled(tmp_path / "test", [i % 3 for i in range(60)], class_names=THREE, seed=5)
    test = open_image_dataset(tmp_path / "test", use_labels=True)
    metrics = ev.evaluate(
        StandInClassifier(THREE),
        test,
        tmp_path / "r",
        compare=StandInClassifier(THREE, gain=3.0),
        n_resamples=300,
        device="cpu",
    )
    s = expected_scores(images, 3)
    assert metrics["task"] == "multiclass" and metrics["positive_class"] is None
    per_class = metrics["auc"]["per_class"]
    for k, name in enumerate(THREE):
        assert per_class[name]["auc"] == pytest.approx(roc_auc_score(y == k, s[:, k]), abs=1e-9)
        assert per_class[name]["low"] < per_class[name]["auc"] < per_class[name]["high"]
    assert metrics["auc"]["macro"]["auc"] == pytest.approx(roc_auc_score(y, s, multi_class="ovr"), abs=1e-9)
    argmax = metrics["argmax"]
    assert argmax["accuracy"] == pytest.approx(np.mean(s.argmax(axis=1) == y))
    counts = np.array(argmax["confusion_matrix"]["counts"])
    assert counts.sum() == 60 and counts.sum(axis=1).tolist() == [20, 20, 20]
    assert argmax["per_class"]["high"]["sensitivity"] == pytest.approx(np.mean(s[y == 2].argmax(axis=1) == 2))
    assert set(metrics["compare"]["delong_one_vs_rest"]) == set(THREE)
    assert "threshold" not in metrics
    with pytest.raises(ev.EvaluationError, match="two-class"):
        ev.evaluate(StandInClassifier(THREE), test, tmp_path / "x", threshold=0.5, device="cpu")


def test_evaluate_refuses_mismatched_classes_and_single_class_data(tmp_path):
    labelled(tmp_path / "test", [0, 1, 0, 1])
    test = open_image_dataset(tmp_path / "test", use_labels=True)
    with pytest.raises(ev.EvaluationError, match="class names"):
        ev.evaluate(StandInClassifier(("healthy", "lesion")), test, tmp_path / "a", device="cpu")
    with pytest.raises(ev.EvaluationError, match="compared model"):
        ev.evaluate(StandInClassifier(), test, tmp_path / "b", compare=StandInClassifier(THREE), device="cpu")
    labelled(tmp_path / "one", [1, 1, 1], class_names=BINARY)
    with pytest.raises(ev.EvaluationError, match="both classes"):
        ev.evaluate(
            StandInClassifier(),
            open_image_dataset(tmp_path / "one", use_labels=True),
            tmp_path / "c",
            device="cpu",
        )
    assert not any((tmp_path / d).exists() for d in "abc")  # nothing written when refused
    # Without class names in dataset.json the label indices are taken as the model's.
    labelled(tmp_path / "unnamed", [0, 1, 0, 1, 1, 0], named=False)
    ok = ev.evaluate(
        StandInClassifier(),
        open_image_dataset(tmp_path / "unnamed", use_labels=True),
        tmp_path / "d",
        n_resamples=100,
        device="cpu",
    )
    assert ok["data"]["dataset_class_names"] is None and ok["data"]["n_per_class"] == {
        "normal": 3,
        "abnormal": 3,
    }


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_evaluate_on_cuda_matches_cpu(tmp_path):
    labelled(tmp_path / "test", [i % 2 for i in range(50)], seed=6)
    test = open_image_dataset(tmp_path / "test", use_labels=True)
    cpu = ev.evaluate(StandInClassifier(), test, tmp_path / "cpu", n_resamples=200, device="cpu")
    cuda = ev.evaluate(StandInClassifier(), test, tmp_path / "cuda", n_resamples=200, device="cuda")
    assert cuda["device"].startswith("cuda")
    assert cuda["auc"]["auc"] == pytest.approx(cpu["auc"]["auc"], abs=1e-6)
    assert cuda["at_threshold"]["sensitivity"] == pytest.approx(cpu["at_threshold"]["sensitivity"])


# ---------------------------------------------------------------------------------------------------
# The command.


@pytest.fixture
def stand_in_loader(monkeypatch):
    """``classification.model_file`` as the command imports it: a loader that reads a small JSON
    "model file" ({"class_names": [...], "gain": g}) into a StandInClassifier, and refuses others."""
    module = types.ModuleType("classification.model_file")

    class ClassifierFileError(Exception):
        pass

    def load_classifier(path, *, device="cpu", sidecar=None, overrides=None):
        try:
            spec = json.loads(Path(path).read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ClassifierFileError(f"{path}: not a classifier file") from None
        return StandInClassifier(tuple(spec["class_names"]), gain=spec["gain"]).to(device)

    module.ClassifierFileError = ClassifierFileError
    module.load_classifier = load_classifier
    monkeypatch.setitem(sys.modules, "classification.model_file", module)
    return module


def write_model(path: Path, class_names=BINARY, gain: float = 6.0) -> Path:
    path.write_text(json.dumps({"class_names": list(class_names), "gain": gain}))
    return path


def run_cli(*args: str):
    return CliRunner().invoke(ev.evaluate_command, [*args, "--quiet", "--workers", "0", "--device", "cpu"])


def test_command_writes_the_report(tmp_path, stand_in_loader):
    y, images = labelled(tmp_path / "test", [i % 2 for i in range(40)], seed=7)
    labelled(tmp_path / "val", [i % 2 for i in range(30)], seed=8)
    model = write_model(tmp_path / "m.json")
    other = write_model(tmp_path / "o.json", gain=1.0)
    out = tmp_path / "report"
    result = run_cli(
        "--model",
        str(model),
        "--data",
        str(tmp_path / "test"),
        "--out",
        str(out),
        "--val-data",
        str(tmp_path / "val"),
        "--compare",
        str(other),
        "--bootstrap",
        "200",
        "--seed",
        "5",
    )
    assert result.exit_code == 0, result.output
    metrics = read_metrics(out)
    assert metrics["auc"]["auc"] == pytest.approx(roc_auc_score(y, expected_scores(images, 2)), abs=1e-9)
    assert metrics["auc"]["n_resamples"] == 200 and metrics["auc"]["seed"] == 5
    assert metrics["threshold"]["source"] == "val_youden"
    assert metrics["compare"]["delong"]["p_value"] == pytest.approx(1.0)
    assert metrics["compare"]["model"]["path"] == str(other.resolve())
    assert "AUC " in result.output and "val_youden" in result.output and "DeLong p = 1" in result.output
    assert {p.name for p in out.iterdir()} == {"metrics.json", "roc.png", "predictions.csv"}


def test_command_warns_when_the_threshold_is_chosen_on_the_test_set(tmp_path, stand_in_loader):
    labelled(tmp_path / "test", [i % 2 for i in range(20)])
    result = run_cli(
        "--model",
        str(write_model(tmp_path / "m.json")),
        "--data",
        str(tmp_path / "test"),
        "--out",
        str(tmp_path / "r"),
        "--bootstrap",
        "100",
    )
    assert result.exit_code == 0, result.output
    assert "test_youden" in result.output and "optimistic" in result.output


def test_command_errors_are_one_line_and_create_no_report(tmp_path, stand_in_loader):
    labelled(tmp_path / "test", [0, 1, 0, 1])
    data = str(tmp_path / "test")
    out = tmp_path / "r"
    bad = tmp_path / "old.pt"
    bad.write_bytes(b"\x80\x02not json")
    cases = [
        (["--model", str(bad), "--data", data], "not a classifier file"),
        (["--model", str(tmp_path / "missing.pt"), "--data", data], "no such file"),
        (["--model", str(write_model(tmp_path / "m3.json", THREE)), "--data", data], "class names"),
        (
            ["--model", str(write_model(tmp_path / "m.json")), "--data", str(tmp_path / "nowhere")],
            "no such folder",
        ),
        (
            ["--model", str(tmp_path / "m.json"), "--data", data, "--threshold", "0.5", "--val-data", data],
            "not both",
        ),
        (["--model", str(tmp_path / "m.json"), "--data", data, "--threshold", "1.5"], "1.5"),
    ]
    for args, message in cases:
        result = run_cli(*args, "--out", str(out))
        assert result.exit_code != 0, args
        assert "Error" in result.output and message in result.output, (args, result.output)
        assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output  # a clean exit
        assert not out.exists(), args
    write_model(tmp_path / "m.json")
    corrupt_body(tmp_path / "test" / "c1" / "img001.png")
    result = run_cli("--model", str(tmp_path / "m.json"), "--data", data, "--out", str(out))
    assert result.exit_code == 1 and "Error: " in result.output and "img001.png" in result.output
    assert "Traceback" not in result.output and not out.exists()
    (tmp_path / "file").write_text("x")
    result = run_cli("--model", str(tmp_path / "m.json"), "--data", data, "--out", str(tmp_path / "file"))
    assert result.exit_code == 2 and "not a folder" in result.output


def test_command_help_documents_every_option():
    result = CliRunner().invoke(ev.evaluate_command, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--model",
        "--data",
        "--out",
        "--val-data",
        "--threshold",
        "--compare",
        "--bootstrap",
        "--seed",
        "--device",
        "--batch",
        "--workers",
        "--quiet",
    ):
        assert option in result.output
