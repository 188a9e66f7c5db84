"""End to end with REAL classifiers (no stand-ins): ``python -m classification train`` on a tiny generated
set -> ``python -m classification evaluate`` (metrics.json, --compare with DeLong, where the threshold
comes from) -> the model file as the ``--detector`` of ``calc_metrics.py`` (classification/features.py,
found through the extractor-provider entry point, without ``--plugin``).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from classification_helpers import shapes_dataset
from click.testing import CliRunner
from conftest import tiny_g_kwargs
from sg2_training_support.data import make_shapes

from classification import evaluate as ev
from classification.cli import main as classification_cli
from classification.features import ClassifierExtractor, open_extractor
from classification.model_file import load_classifier
from classification.transform import images_uint8_to_float
from stylegan2_ada import checkpoint
from stylegan2_ada.metrics.extractors import PROVIDER_GROUP, extractor_providers, load_extractor
from stylegan2_ada.networks import Generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]


def _invoke(*args: str):
    return CliRunner().invoke(classification_cli, list(args))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Two real ``small`` classifiers trained on the same 120 noisy 32 px images (a strong one and a
    weak one: 1 epoch, width 4), and an independent test set (other seed)."""
    root = tmp_path_factory.mktemp("integration")
    train = shapes_dataset(root / "train", n_per_class=60, seed=0)
    test = shapes_dataset(root / "test", n_per_class=40, seed=7)
    common = ["train", "--data", str(train), "--val-fraction", "0.25", "--batch", "16", "--lr", "3e-3"]
    common += ["--patience", "0", "--workers", "0", "--quiet", "--device", "cpu"]
    strong, weak = root / "strong.safetensors", root / "weak.safetensors"
    for out, extra in ((strong, ["--epochs", "6"]), (weak, ["--epochs", "1", "--width", "4", "--seed", "1"])):
        result = _invoke(*common, *extra, "--out", str(out))
        assert result.exit_code == 0, result.output
    return {"train": train, "test": test, "strong": strong, "weak": weak, "root": root}


def test_train_then_evaluate_with_compare_gives_a_sane_report(models, tmp_path):
    out = tmp_path / "report"
    result = _invoke(
        "evaluate",
        *("--model", str(models["strong"]), "--data", str(models["test"]), "--out", str(out)),
        *(
            "--compare",
            str(models["weak"]),
            "--bootstrap",
            "300",
            "--workers",
            "0",
            "--quiet",
            "--device",
            "cpu",
        ),
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "roc.png").stat().st_size > 0
    auc = metrics["auc"]
    assert auc["auc"] > 0.9 and auc["low"] <= auc["auc"] <= auc["high"] <= 1.0
    assert metrics["data"]["n"] == 80 and metrics["data"]["n_per_class"] == {"normal": 40, "abnormal": 40}
    assert metrics["class_names"] == ["normal", "abnormal"] and "warnings" not in metrics

    # The figures agree with the predictions file: AUC (scikit-learn) and the rates at the threshold.
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels, scores) == pytest.approx(auc["auc"], abs=1e-9)
    # No --val-data: the threshold is the one the model file fixed on its own validation split.
    meta = load_classifier(models["strong"]).meta
    thr = metrics["threshold"]
    assert thr["source"] == "model_validation_youden" and thr["optimistic"] is False
    assert thr["value"] == meta.validation["youden_threshold"]
    assert "warning" not in result.output
    called = scores >= thr["value"]
    at = metrics["at_threshold"]
    assert at["sensitivity"] == pytest.approx(called[labels == 1].mean())
    assert at["specificity"] == pytest.approx((~called[labels == 0]).mean())

    compare = metrics["compare"]
    delong = compare["delong"]
    assert 0.0 <= delong["p_value"] <= 1.0 and delong["ci_low"] <= delong["difference"] <= delong["ci_high"]
    assert delong["auc_a"] == pytest.approx(auc["auc"]) and delong["auc_b"] == pytest.approx(
        compare["auc"]["auc"]
    )
    assert re.search(r"paired DeLong p = [0-9.e-]+", result.output)


def test_the_models_own_threshold_is_not_used_on_its_own_training_data(models, tmp_path):
    """Evaluating on a source the model was trained on: the figures are flagged and the threshold is
    chosen on the test data (optimistic), not taken from the file."""
    classifier = load_classifier(models["strong"])
    assert ev.model_validation_threshold(classifier) is not None
    metrics = ev.evaluate(
        classifier,
        ev.open_image_dataset(str(models["train"]), use_labels=True),
        tmp_path / "seen",
        n_resamples=200,
    )
    assert metrics["threshold"]["source"] == "test_youden" and metrics["threshold"]["optimistic"] is True
    assert metrics["warnings"] == [ev.SEEN_DATA_WARNING]


def test_a_file_without_recorded_sources_gets_no_stored_threshold(models, tmp_path):
    """An imported file (a plain state dict + side-car metadata, with a "validation" claim but no source
    fingerprints) cannot show that its validation data are not the test data."""
    classifier = load_classifier(models["strong"])
    state = tmp_path / "model.pt"
    torch.save(classifier.net.state_dict(), state)
    doc = {k: v for k, v in classifier.meta.to_document().items() if k not in ("format", "format_version")}
    doc["training_data"] = {}
    (tmp_path / "model.pt.json").write_text(json.dumps(doc))
    imported = load_classifier(state)
    assert imported.meta.validation["youden_threshold"] == classifier.meta.validation["youden_threshold"]
    assert ev.model_validation_threshold(imported) is None


# ------------------------------------------------------------------------------- the model as a detector


def _fake_installed_entry_points(site: Path) -> None:
    """What ``pip install .`` records for this project's extractor providers: the entry points declared in
    pyproject.toml, in a dist-info folder (importlib.metadata reads them from there)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split(f'[project.entry-points."{PROVIDER_GROUP}"]', 1)[1].split("\n[", 1)[0]
    lines = [ln for ln in section.splitlines() if re.match(r"^\w+\s*=", ln)]
    dist = site / "spinegan-0.0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: spinegan\nVersion: 0.0.0\n")
    entries = "\n".join(ln.replace('"', "") for ln in lines)
    (dist / "entry_points.txt").write_text(f"[{PROVIDER_GROUP}]\n{entries}\n")


def test_extractor_gives_the_classifiers_penultimate_features(models):
    extractor = open_extractor(str(models["strong"]), torch.device("cpu"))
    assert isinstance(extractor, ClassifierExtractor)
    classifier = load_classifier(models["strong"])
    images = torch.randint(0, 256, (5, 1, 24, 24), dtype=torch.uint8)  # any size: the eval transform resizes
    features = extractor(images)
    assert features.dtype == torch.float32 and features.shape == (5, extractor.feature_dim)
    with torch.no_grad():
        torch.testing.assert_close(features, classifier.features(images_uint8_to_float(images)))
    rgb = extractor(images.repeat(1, 3, 1, 1))  # 3 -> 1 channel by the mean: the same grey images
    torch.testing.assert_close(rgb, features, atol=1e-5, rtol=1e-5)
    described = extractor.describe()
    assert described["kind"] == "spinegan-classifier" and described["class_names"] == ["normal", "abnormal"]
    other = open_extractor(str(models["weak"]), torch.device("cpu"))
    assert other.content_hash != extractor.content_hash and len(extractor.content_hash) == 64
    # Files that are not classifier files are left to the metrics' own kinds.
    assert open_extractor(str(models["root"] / "missing.safetensors"), torch.device("cpu")) is None
    plain = models["root"] / "plain.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    assert open_extractor(str(plain), torch.device("cpu")) is None


def test_provider_entry_point_is_found_without_naming_a_plugin(models, tmp_path, monkeypatch):
    _fake_installed_entry_points(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    names = [name for name, _ in extractor_providers()]
    assert "classifier" in names
    extractor = load_extractor(models["strong"], device="cpu", pm=None)
    assert isinstance(extractor, ClassifierExtractor)


def _calc_metrics_cli():
    spec = importlib.util.spec_from_file_location("calc_metrics_cli", ROOT / "calc_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_calc_metrics_with_a_classifier_model_as_detector(models, tmp_path, monkeypatch):
    _fake_installed_entry_points(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    torch.manual_seed(0)
    snapshot = tmp_path / "run" / "network-snapshot-000004.safetensors"
    snapshot.parent.mkdir()
    checkpoint.save_checkpoint(
        snapshot,
        networks={"G_ema": Generator(**tiny_g_kwargs(16, 2, 1))},
        metadata={"training_state": {"cur_nimg": 4000}},
    )
    data = make_shapes(tmp_path / "shapes", n=16, res=16)
    args = ["--network", str(snapshot), "--data", str(data), "--detector", str(models["strong"])]
    args += ["--metrics", "fid50k_full", "--num", "16", "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(_calc_metrics_cli(), [*args, "--quiet", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "Detector: classifier-small (spinegan-classifier)" in result.output
    (line,) = (snapshot.parent / "metric-fid50k_full.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["detector"]["kind"] == "spinegan-classifier"
    assert record["detector"]["file_sha256"] == checkpoint.sha256_file(models["strong"])
    assert np.isfinite(record["results"]["fid50k_full"]) and record["results"]["fid50k_full"] >= 0
