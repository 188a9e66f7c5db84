"""Training classifiers (classification/train.py, data.py, cli.py train) on small generated image sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from classification_helpers import CLASS_NAMES, shape_images, shapes_dataset, write_dataset
from click.testing import CliRunner
from PIL import Image

from classification.cli import main
from classification.data import DataError, prepare_data, split_validation
from classification.model_file import load_classifier
from classification.train import TrainConfig, TrainingError, train_classifier
from classification.transform import Augment

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """120 noisy 32 px images: discs ("normal") and squares ("abnormal"), each patient with 1-3 images."""
    rng = np.random.default_rng(1)
    groups = [f"patient{int(g)}" for g in np.sort(rng.integers(0, 50, size=120))]
    return shapes_dataset(tmp_path_factory.mktemp("shapes"), n_per_class=60, groups=groups)


def test_small_classifier_learns_discs_versus_squares(shapes, tmp_path):
    """The acceptance check: validation AUC > 0.95; the saved file gives the same logits."""
    config = TrainConfig(
        data=[str(shapes)], val_fraction=0.25, epochs=6, batch=16, lr=3e-3, patience=0, workers=0
    )
    result = train_classifier(config, progress=False)
    clf = result.classifier
    assert clf.meta.validation["auc"] > 0.95
    assert clf.meta.class_names == tuple(CLASS_NAMES)
    assert clf.meta.arch == "small" and clf.meta.input_size == 32 and clf.meta.in_channels == 1
    summary = clf.meta.training_data
    assert summary["split"]["method"] == "stratified-grouped"
    assert sum(summary["val_counts"].values()) == clf.meta.validation["n"]
    assert sum(summary["train_counts"].values()) + clf.meta.validation["n"] == 120
    assert len(summary["sources"][0]["sha256"]) == 64
    history = clf.meta.validation["history"]
    assert len(history) == 6 and max(h["val_auc"] for h in history) == clf.meta.validation["auc"]
    assert clf.meta.validation["epoch"] == clf.meta.training["best_epoch"]

    # The stored validation AUC is that of the stored weights.
    val_images, val_labels = _validation_images(shapes, clf)
    from sklearn.metrics import roc_auc_score

    with torch.no_grad():
        auc = roc_auc_score(val_labels, clf.scores(val_images).numpy())
    assert auc == pytest.approx(clf.meta.validation["auc"], abs=1e-6)

    from classification.model_file import save_classifier

    path = tmp_path / "clf.safetensors"
    save_classifier(path, clf)
    loaded = load_classifier(path)
    assert torch.equal(loaded.logits(val_images), clf.logits(val_images))
    assert loaded.meta == clf.meta


def _validation_images(folder: Path, clf) -> tuple[torch.Tensor, np.ndarray]:
    """The validation part of the split the model records, as [-1, 1] images and labels."""
    from classification.model_file import images_uint8_to_float

    data = prepare_data([str(folder)], val_fraction=0.25, seed=clf.meta.training["seed"])
    ds = data.sources[0].dataset
    x = torch.stack([torch.from_numpy(ds.load_image(s.index)) for s in data.val])
    return images_uint8_to_float(x), np.array([s.label for s in data.val])


def test_training_is_deterministic_whatever_the_worker_count(shapes):
    base = dict(data=[str(shapes)], epochs=1, batch=16, patience=0)
    first = train_classifier(TrainConfig(**base, workers=0), progress=False).classifier
    again = train_classifier(TrainConfig(**base, workers=0), progress=False).classifier
    workers = train_classifier(TrainConfig(**base, workers=2), progress=False).classifier
    other = train_classifier(TrainConfig(**base, workers=0, seed=1), progress=False).classifier
    reference = first.net.state_dict()
    for clf in (again, workers):
        for key, value in clf.net.state_dict().items():
            assert torch.equal(value, reference[key]), key
    assert not torch.equal(other.net.head.weight, first.net.head.weight)


def test_split_is_stratified_and_grouped():
    rng = np.random.default_rng(0)
    groups = [f"p{g}" for g in rng.integers(0, 80, size=400)]
    labels = np.array(
        [int(g[1:]) % 3 == 0 for g in groups], dtype=np.int64
    )  # a patient's images share a label
    train, val, how = split_validation(labels, groups, 0.2, seed=3)
    assert how["method"] == "stratified-grouped" and how["folds"] == 5
    assert not {groups[i] for i in train} & {groups[i] for i in val}
    assert sorted([*train, *val]) == list(range(400))
    assert 0.1 < len(val) / 400 < 0.3
    assert abs(labels[val].mean() - labels.mean()) < 0.1  # class balance kept
    # Without groups: an exact stratified split.
    train, val, how = split_validation(labels, [str(i) for i in range(400)], 0.2, seed=3)
    assert how["method"] == "stratified" and len(val) == 80
    assert abs(labels[val].mean() - labels.mean()) < 0.01
    with pytest.raises(DataError, match="fewer than 2"):
        split_validation(np.array([0, 0, 0, 1]), ["a", "b", "c", "d"], 0.5, seed=0)


def test_groups_come_from_dataset_json_and_must_cover_every_image(tmp_path):
    images, labels = shape_images(10, resolution=16)
    groups = [f"p{i // 2}" for i in range(20)]
    folder = write_dataset(tmp_path / "grouped", images, labels, groups=groups)
    data = prepare_data([str(folder)], val_fraction=0.3)
    ds = data.sources[0].dataset
    group_of = {ds.relpath(s.index): groups[s.index] for s in (*data.train, *data.val)}
    train_groups = {group_of[ds.relpath(s.index)] for s in data.train}
    assert not train_groups & {group_of[ds.relpath(s.index)] for s in data.val}
    doc = json.loads((folder / "dataset.json").read_text())
    del doc["groups"]["img0003.png"]
    (folder / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="no id for 1 of 20 images"):
        prepare_data([str(folder)])
    flat = {name: label for name, label in doc["labels"]} | {"groups": doc["groups"]}
    (folder / "dataset.json").write_text(json.dumps(flat))
    with pytest.raises(DataError, match="needs the upstream format"):
        prepare_data([str(folder)])


def write_generated(folder: Path, cls: int, count: int, seed: int) -> Path:
    """A folder as generate.py writes it: seed%04d.png + manifest.json naming the class."""
    images, _ = shape_images(count, resolution=16, seed=seed)
    folder.mkdir(parents=True)
    entries = []
    for i, img in enumerate(images[cls::2][:count]):
        name = f"seed{i:04d}.png"
        Image.fromarray(img).save(folder / name)
        entries.append({"seed": i, "file": name})
    manifest = {"class": cls, "class_name": CLASS_NAMES[cls], "network": {"c_dim": 2}, "images": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_synthetic_images_train_only_first_k_per_class(tmp_path):
    real = shapes_dataset(tmp_path / "real", n_per_class=10, resolution=16)
    synth = tmp_path / "synthetic"
    write_generated(synth / "class0", 0, 6, seed=5)
    write_generated(synth / "class1", 1, 6, seed=6)
    data = prepare_data([str(real)], synthetic=[str(synth)], synthetic_per_class=4, val_fraction=0.3)
    kinds = {i: s.kind for i, s in enumerate(data.sources)}
    synthetic = [s for s in data.train if kinds[s.source] == "synthetic"]
    assert sorted(s.label for s in synthetic) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert all(
        data.sources[s.source].dataset.relpath(s.index) in {f"seed{i:04d}.png" for i in range(4)}
        for s in synthetic
    )
    assert all(kinds[s.source] == "real" for s in data.val)
    assert data.summary()["train_synthetic_counts"] == {"normal": 4, "abnormal": 4}
    # Synthetic-only training, validated on real images.
    only = prepare_data([], val_data=[str(real)], synthetic=[str(synth)])
    assert {kinds[s.source] for s in only.train} == {"synthetic"} and len(only.val) == 20


def test_class_names_must_agree_across_sources(tmp_path):
    images, labels = shape_images(4, resolution=16)
    a = write_dataset(tmp_path / "a", images, labels)
    b = write_dataset(tmp_path / "b", images, labels, class_names=["healthy", "abnormal"])
    with pytest.raises(DataError, match="class 0 is called 'normal'"):
        prepare_data([str(a), str(b)])


def test_cli_train_writes_the_model_and_refuses_bad_input(shapes, tmp_path):
    out = tmp_path / "models" / "clf.safetensors"
    args = [
        "train",
        "--data",
        str(shapes),
        "--epochs",
        "1",
        "--batch",
        "16",
        "--workers",
        "0",
        "--quiet",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "validation AUC" in result.output
    assert load_classifier(out).meta.training["epochs_run"] == 1
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = CliRunner().invoke(
        main, ["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x.safetensors")]
    )
    assert bad.exit_code == 1 and bad.output.startswith("Error: ") and "missing" in bad.output
    weights = CliRunner().invoke(
        main,
        ["train", "--data", str(shapes), "--weights", str(out), "--out", str(tmp_path / "y.safetensors")],
    )
    assert weights.exit_code == 1 and "torchvision" in weights.output
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    for option in (
        "--data",
        "--synthetic",
        "--synthetic-per-class",
        "--val-fraction",
        "--arch",
        "--weights",
        "--epochs",
        "--batch",
        "--out",
        "--device",
        "--seed",
    ):
        assert option in help_text


def test_pretrained_weights_are_loaded_except_the_head(shapes, tmp_path):
    import torchvision

    torch.manual_seed(5)
    imagenet = torchvision.models.resnet18(weights=None)  # stands in for local ImageNet weights
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    config = TrainConfig(
        data=[str(shapes)],
        arch="resnet18",
        weights=str(path),
        input_size=32,
        epochs=1,
        batch=16,
        lr=1e-9,
        workers=0,
        augment=Augment(0, 0, 1),
    )
    clf = train_classifier(config, progress=False).classifier
    assert clf.meta.mean == (0.485, 0.456, 0.406) and clf.meta.in_channels == 3
    assert torch.allclose(clf.net.conv1.weight, imagenet.conv1.weight, atol=1e-6)  # lr ~ 0: unchanged
    assert clf.net.fc.out_features == 1
    assert clf.meta.training["pretrained_weights"]["sha256"]
    with pytest.raises(TrainingError, match="torchvision"):
        train_classifier(TrainConfig(data=[str(shapes)], weights=str(path)), progress=False)


def test_the_same_data_cannot_be_training_and_validation(tmp_path):
    real = shapes_dataset(tmp_path / "real", n_per_class=4, resolution=16)
    copy = shapes_dataset(tmp_path / "copy", n_per_class=4, resolution=16)
    with pytest.raises(DataError, match="same content"):
        prepare_data([str(real)], val_data=[str(copy)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_training_on_cuda_uses_mixed_precision_and_saves_a_cpu_model(shapes, tmp_path):
    config = TrainConfig(data=[str(shapes)], epochs=2, batch=16, patience=0, workers=0, device="cuda")
    clf = train_classifier(config, progress=False).classifier
    assert clf.meta.training["precision"].startswith("float16") and clf.device.type == "cpu"
    from classification.model_file import save_classifier

    save_classifier(tmp_path / "clf.safetensors", clf)
    gpu = load_classifier(tmp_path / "clf.safetensors", device="cuda")
    x = torch.rand([4, 1, 32, 32]) * 2 - 1
    assert torch.allclose(gpu.logits(x.cuda()).cpu(), clf.logits(x), atol=1e-4)


def test_early_stopping_keeps_the_best_epoch(shapes):
    config = TrainConfig(data=[str(shapes)], epochs=30, batch=16, lr=3e-3, patience=2, workers=0)
    clf = train_classifier(config, progress=False).classifier
    training, history = clf.meta.training, clf.meta.validation["history"]
    assert training["epochs_run"] == training["best_epoch"] + 2 < 30
    ranking = sorted(history, key=lambda h: (-h["val_auc"], h["val_loss"]))  # best AUC, then lower loss
    assert ranking[0]["epoch"] == training["best_epoch"] == clf.meta.validation["epoch"]
    assert clf.meta.validation["auc"] == ranking[0]["val_auc"]
