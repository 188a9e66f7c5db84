"""The classifier model file and loaders (classification/model_file.py): our safetensors format, the files
users bring (TorchScript, torch.export, state dicts), the eval transform, and the Classifier API."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from classification.model_file import (
    Classifier,
    ClassifierFileError,
    ClassifierMeta,
    images_uint8_to_float,
    load_classifier,
    save_classifier,
)
from classification.models import IMAGENET_MEAN, IMAGENET_STD, build_network
from classification.transform import EvalTransform

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAMES = ("normal", "abnormal")


def small_classifier(size: int = 16, channels: int = 1, names=NAMES, seed: int = 1) -> Classifier:
    """An untrained `small` classifier with non-trivial BatchNorm statistics (so eval mode matters)."""
    torch.manual_seed(seed)
    net = build_network("small", 1 if len(names) == 2 else len(names), channels, size, {"width": 4})
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(7)
    meta = ClassifierMeta(
        arch="small",
        input_size=size,
        in_channels=channels,
        mean=(0.3,) * channels,
        std=(0.2,) * channels,
        class_names=tuple(names),
        arch_kwargs={"width": 4},
        validation={"auc": 0.5},
    )
    return Classifier(meta, net)


def images(n: int = 3, channels: int = 1, size: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand([n, channels, size, size], generator=torch.Generator().manual_seed(seed)) * 2 - 1


def sidecar_document(classifier: Classifier) -> dict:
    doc = classifier.meta.to_document()
    return {
        k: doc[k] for k in ("arch", "arch_kwargs", "input_size", "in_channels", "mean", "std", "class_names")
    }


# --------------------------------------------------------------------------------------------------
# The API.


def test_classifier_is_frozen_and_shapes_follow_the_contract():
    clf = small_classifier()
    assert not clf.net.training and not any(p.requires_grad for p in clf.net.parameters())
    x = images(5, size=24)
    assert clf.preprocess(x).shape == (5, 1, 16, 16)
    assert clf.logits(x).shape == (5, 1)
    scores = clf.scores(x)
    assert scores.shape == (5,) and torch.allclose(scores, torch.sigmoid(clf.logits(x)[:, 0]))
    assert clf.features(x).shape == (5, clf.net.num_features)
    three = small_classifier(names=("a", "b", "c"))
    s3 = three.scores(x)
    assert three.logits(x).shape == (5, 3) and s3.shape == (5, 3)
    assert torch.allclose(s3.sum(dim=1), torch.ones(5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        clf.meta = None  # type: ignore[misc]


def test_gradients_reach_the_images_and_never_the_weights():
    clf = small_classifier()
    x = images(2).requires_grad_(True)
    clf.logits(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in clf.net.parameters())


def test_features_are_the_head_input():
    clf = small_classifier()
    x = images(4)
    feats = clf.features(x)
    head = clf.net.head
    assert torch.allclose(feats @ head.weight.T + head.bias, clf.logits(x), atol=1e-6)


def test_preprocess_equals_the_hand_computed_transform():
    # 1 channel -> 3 channels, 8x8 -> 4x4, own mean/std.
    meta = ClassifierMeta("resnet18", 4, 3, (0.1, 0.2, 0.3), (0.5, 0.25, 0.125), NAMES)
    clf = Classifier(meta, build_network("resnet18", 1, 3, 32))
    x = images(2, channels=1, size=8, seed=3)
    unit = ((x + 1) / 2)[:, 0].numpy()  # [2, 8, 8] in [0, 1]
    # Antialiased bilinear downscaling is PIL's triangle filter: compare with Pillow on float images.
    resized = np.stack(
        [np.asarray(Image.fromarray(u, mode="F").resize((4, 4), Image.BILINEAR)) for u in unit]
    )
    expected = np.stack([(resized - m) / s for m, s in zip(meta.mean, meta.std)], axis=1)  # [2, 3, 4, 4]
    np.testing.assert_allclose(clf.preprocess(x).numpy(), expected, atol=1e-5)
    # Exactly by hand: 2x2 -> 1x1 is the mean of the four pixels; RGB -> 1 channel is the channel mean.
    t = EvalTransform(1, 1, (0.5,), (0.25,))
    rgb = torch.tensor([[[[-1.0, 1.0], [0.0, 0.5]], [[1.0, 1.0], [1.0, 1.0]], [[-1.0, -1.0], [-1.0, -1.0]]]])
    by_hand = (((-1 + 1) / 2 + (1 + 1) / 2 + (0 + 1) / 2 + (0.5 + 1) / 2) / 4 + 1 + 0) / 3  # = 0.5208...
    assert torch.allclose(t(rgb), torch.tensor((by_hand - 0.5) / 0.25).view(1, 1, 1, 1), atol=1e-6)


def test_center_crop_keeps_the_middle_before_resizing():
    t = EvalTransform(6, 1, (0.0,), (1.0,), center_crop=0.75)
    x = images(1, size=8, seed=5)
    np.testing.assert_allclose(t(x).numpy(), ((x[:, :, 1:7, 1:7] + 1) / 2).numpy(), atol=1e-6)


def test_images_uint8_to_float_maps_0_and_255_to_the_ends():
    u = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    assert torch.allclose(
        images_uint8_to_float(u), torch.tensor([-1.0, 51 / 127.5 - 1, 1.0]).view(1, 1, 1, 3)
    )
    with pytest.raises(TypeError):
        images_uint8_to_float(u.float())


# --------------------------------------------------------------------------------------------------
# Our format.


def test_save_then_load_gives_identical_logits_and_metadata(tmp_path):
    clf = small_classifier(size=16)
    path = tmp_path / "clf.safetensors"
    save_classifier(path, clf)
    loaded = load_classifier(path)
    x = images(4)
    assert torch.equal(loaded.logits(x), clf.logits(x))
    assert loaded.meta == clf.meta
    for key, value in clf.net.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[key], value), key
    header = json.loads(_safetensors_header(path)["__metadata__"]["classifier"])
    assert header["format"] == "spinegan-classifier" and header["format_version"] == 1
    assert header["eval_transform"]["name"] == "spinegan-eval-v1"
    assert header["num_outputs"] == 1 and header["class_names"] == list(NAMES)
    assert {"created", "torch", "torchvision"} <= set(header["provenance"])


def _safetensors_header(path) -> dict:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n])


def test_our_format_refuses_newer_versions_unknown_archs_and_overrides(tmp_path):
    from safetensors.torch import load_file, save_file

    clf = small_classifier()
    path = tmp_path / "clf.safetensors"
    save_classifier(path, clf)
    tensors = load_file(path)
    doc = json.loads(_safetensors_header(path)["__metadata__"]["classifier"])
    for change, expected in (
        ({"format_version": 2}, "format version 2"),
        ({"arch": "vit_h_14"}, "must be one of small, resnet18"),
        ({"eval_transform": {"name": "other-v9"}}, "eval transform 'other-v9' is unknown"),
        ({"class_names": ["only"]}, "at least two distinct names"),
    ):
        bad = tmp_path / "bad.safetensors"
        save_file(tensors, bad, metadata={"classifier": json.dumps({**doc, **change})})
        with pytest.raises(ClassifierFileError, match=expected) as err:
            load_classifier(bad)
        assert str(bad) in str(err.value)
    with pytest.raises(ClassifierFileError, match="overrides and side-car"):
        load_classifier(path, overrides={"input_size": 32})


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "file is empty"),
        (b"hello world, not a model", "unrecognised file format"),
        (b"PK\x03\x04junk", "corrupt zip"),
    ],
)
def test_unusable_files_give_one_line_errors_naming_them(tmp_path, content, expected):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ClassifierFileError, match=expected) as err:
        load_classifier(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ClassifierFileError, match="not found"):
        load_classifier(tmp_path / "missing.safetensors")


def test_save_is_atomic_and_names_a_missing_folder(tmp_path):
    clf = small_classifier()
    with pytest.raises(ClassifierFileError, match="does not exist"):
        save_classifier(tmp_path / "nope" / "clf.safetensors", clf)
    path = tmp_path / "clf.safetensors"
    save_classifier(path, clf)
    save_classifier(path, small_classifier(seed=2))
    assert [p.name for p in tmp_path.iterdir()] == ["clf.safetensors"]  # no temporary files left


# --------------------------------------------------------------------------------------------------
# Files users bring.


def test_torchscript_with_sidecar_or_embedded_metadata_gives_the_same_logits(tmp_path):
    clf = small_classifier()
    x = images(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        scripted = torch.jit.trace(clf.net, clf.preprocess(x))
        side = tmp_path / "side.pt"
        scripted.save(str(side))
        embedded = tmp_path / "embedded.pt"
        scripted.save(str(embedded), _extra_files={"classifier.json": json.dumps(sidecar_document(clf))})
    (tmp_path / "side.pt.json").write_text(json.dumps(sidecar_document(clf)))
    for path in (side, embedded):
        loaded = load_classifier(path)
        assert torch.equal(loaded.logits(x), clf.logits(x)), path
        assert loaded.meta.class_names == NAMES
        assert any("torchscript" in note for note in loaded.meta.training["conversion_notes"])


def test_torch_export_archive_with_embedded_metadata_gives_the_same_logits(tmp_path):
    clf = small_classifier()
    x = images(3)
    program = torch.export.export(clf.net, (clf.preprocess(x),))
    path = tmp_path / "model.pt2"
    torch.export.save(program, path, extra_files={"classifier.json": json.dumps(sidecar_document(clf))})
    loaded = load_classifier(path)
    assert torch.equal(loaded.logits(x), clf.logits(x))


def test_state_dict_with_sidecar_or_overrides_gives_the_same_logits(tmp_path):
    clf = small_classifier()
    x = images(3)
    path = tmp_path / "weights.pt"
    torch.save(clf.net.state_dict(), path)
    with pytest.raises(ClassifierFileError, match="arch") as err:
        load_classifier(path)  # no metadata anywhere
    assert str(path) in str(err.value)
    sidecar = tmp_path / "meta.json"
    sidecar.write_text(json.dumps(sidecar_document(clf)))
    assert torch.equal(load_classifier(path, sidecar=sidecar).logits(x), clf.logits(x))
    overrides = {**sidecar_document(clf)}
    overrides.pop("in_channels")  # `small` reads it from the weights
    assert torch.equal(load_classifier(path, overrides=overrides).logits(x), clf.logits(x))
    # A checkpoint dict from a DataParallel run.
    wrapped = tmp_path / "checkpoint.pt"
    torch.save(
        {"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in clf.net.state_dict().items()}}, wrapped
    )
    assert torch.equal(load_classifier(wrapped, sidecar=sidecar).logits(x), clf.logits(x))
    # Metadata that does not fit the weights.
    with pytest.raises(ClassifierFileError, match="do not fit"):
        load_classifier(path, overrides={**overrides, "arch_kwargs": {"width": 8}})
    with pytest.raises(ClassifierFileError, match="3 class names"):
        load_classifier(path, overrides={**overrides, "class_names": ["a", "b", "c"]})


def test_original_spinegan_layout_is_folded_into_one_head(tmp_path):
    """nn.Sequential(torchvision model with its 1000-class layer, Linear(1000, 1), Sigmoid): the two linear
    layers compose exactly; the converted logits are the input of the original's Sigmoid."""
    torch.manual_seed(0)
    import torchvision

    original = nn.Sequential(
        torchvision.models.resnet18(weights=None), nn.Linear(1000, 1), nn.Sigmoid()
    ).eval()
    path = tmp_path / "state.pt"
    torch.save(original.state_dict(), path)
    clf = load_classifier(path, overrides={"arch": "resnet18", "class_names": list(NAMES), "input_size": 32})
    x = images(2, channels=1, size=32)
    with torch.no_grad():
        expected = original(clf.preprocess(x))[:, 0]
    assert torch.allclose(clf.scores(x), expected, atol=1e-5)
    assert any("folded" in note for note in clf.meta.training["conversion_notes"])
    # Two softmax outputs for two classes become one logit: l1 - l0.
    two = nn.Sequential(torchvision.models.resnet18(weights=None), nn.Linear(1000, 2)).eval()
    torch.save(two.state_dict(), path)
    clf2 = load_classifier(path, overrides={"arch": "resnet18", "class_names": list(NAMES), "input_size": 32})
    with torch.no_grad():
        expected2 = torch.softmax(two(clf2.preprocess(x)), dim=1)[:, 1]
    assert torch.allclose(clf2.scores(x), expected2, atol=1e-5)


def test_torchvision_archs_have_the_documented_features():
    torch.manual_seed(0)
    meta = ClassifierMeta("resnet18", 32, 3, IMAGENET_MEAN, IMAGENET_STD, ("a", "b", "c"))
    clf = Classifier(meta, build_network("resnet18", 3, 3, 32))
    x = images(2, channels=1, size=40)
    assert clf.features(x).shape == (2, 512) and clf.logits(x).shape == (2, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_cuda_logits_match_cpu(tmp_path):
    clf = small_classifier()
    path = tmp_path / "clf.safetensors"
    save_classifier(path, clf)
    x = images(4)
    on_gpu = load_classifier(path, device="cuda")
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.logits(x.cuda()).cpu(), clf.logits(x), atol=1e-4)
