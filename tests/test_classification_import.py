"""Whole pickled models: refused by every loader (without running their code), converted only by
``python -m classification import --trust-pickle``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from classification.cli import main
from classification.importer import import_model
from classification.model_file import ClassifierFileError, PickledModelError, load_classifier
from classification.models import SmallCNN

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAMES = ["normal", "abnormal"]


class TrapNet(SmallCNN):
    """A SmallCNN whose unpickling writes a file: proof of whether a loader ran code from the file."""

    def __setstate__(self, state: dict) -> None:
        Path(state["_trap_file"]).write_text("code from the pickle ran")
        super().__setstate__(state)


def trap_model(tmp_path: Path) -> tuple[Path, Path, TrapNet]:
    torch.manual_seed(0)
    net = TrapNet(1, 1, 16, width=4).eval()
    trap = tmp_path / "trap-fired"
    net._trap_file = str(trap)
    path = tmp_path / "old model.pt"
    torch.save(net, path)
    return path, trap, net


def test_whole_pickled_model_is_refused_without_running_its_code(tmp_path):
    path, trap, _ = trap_model(tmp_path)
    with pytest.raises(PickledModelError) as err:
        load_classifier(
            path,
            overrides={"arch": "small", "class_names": NAMES, "input_size": 16, "mean": [0.5], "std": [0.5]},
        )
    message = str(err.value)
    assert "whole pickled Python model" in message and "TrapNet" in message
    assert f"python -m classification import --trust-pickle '{path}' --out" in message
    assert "\n" not in message
    with pytest.raises(PickledModelError):
        import_model(path)  # the import command without --trust-pickle refuses too
    assert not trap.exists()


def test_cli_refuses_without_the_flag_and_converts_with_it(tmp_path):
    path, trap, net = trap_model(tmp_path)
    out = tmp_path / "converted.safetensors"
    args = [
        "import",
        str(path),
        "--out",
        str(out),
        "--class-names",
        "normal,abnormal",
        "--input-size",
        "16",
        "--mean",
        "0.5",
        "--std",
        "0.5",
    ]
    refused = CliRunner().invoke(main, args)
    assert (
        refused.exit_code == 1 and refused.output.startswith("Error: ") and "--trust-pickle" in refused.output
    )
    assert not trap.exists() and not out.exists()

    converted = CliRunner().invoke(main, [*args, "--trust-pickle"])
    assert converted.exit_code == 0, converted.output
    assert "RUNS PYTHON CODE STORED IN THE FILE" in converted.output
    assert "architecture small inferred" in converted.output and "differ by at most" in converted.output
    assert trap.exists()  # this one path did unpickle, as asked
    clf = load_classifier(out)
    x = torch.rand([3, 1, 16, 16]) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(clf.logits(x), net(clf.preprocess(x)), atol=1e-6)
    assert clf.meta.class_names == tuple(NAMES)

    again = CliRunner().invoke(main, [*args, "--trust-pickle"])
    assert again.exit_code == 2 and "exists" in again.output  # never replaces without --overwrite


def test_original_spinegan_model_converts_with_its_crop(tmp_path):
    """What the original project saved: torch.save(nn.Sequential(DenseNet-like backbone, Linear(1000, 1),
    Sigmoid)) (a resnet18 here, for speed); the two linear layers fold into one head, the Sigmoid is
    dropped, and the converted scores equal the original's outputs."""
    import torchvision

    torch.manual_seed(0)
    original = nn.Sequential(
        torchvision.models.resnet18(weights=None), nn.Linear(1000, 1), nn.Sigmoid()
    ).eval()
    path = tmp_path / "checkpoint_12.pt"
    torch.save(original, path)
    result = import_model(
        path,
        trust_pickle=True,
        overrides={"class_names": NAMES, "input_size": 32, "center_crop": 0.875},
    )
    clf = result.classifier
    assert clf.meta.arch == "resnet18" and clf.meta.center_crop == 0.875
    assert result.max_score_difference is not None and result.max_score_difference < 1e-5
    assert any("final sigmoid dropped" in n for n in result.notes)
    assert any("folded" in n for n in result.notes)
    x = torch.rand([2, 1, 32, 32]) * 2 - 1
    with torch.no_grad():
        expected = original(clf.preprocess(x))[:, 0]
    assert torch.allclose(clf.scores(x), expected, atol=1e-5)


def test_layers_that_cannot_be_folded_are_refused(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(SmallCNN(1, 4, 16, width=4), nn.ReLU(), nn.Linear(4, 1))
    path = tmp_path / "relu.pt"
    torch.save(model, path)
    with pytest.raises(ClassifierFileError, match="ReLU"):
        import_model(
            path,
            trust_pickle=True,
            overrides={"class_names": NAMES, "input_size": 16, "mean": [0.5], "std": [0.5]},
        )


def test_import_converts_non_pickle_files_with_a_sidecar(tmp_path):
    torch.manual_seed(0)
    net = SmallCNN(1, 3, 16, width=4).eval()
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)
    (tmp_path / "weights.pt.json").write_text(
        json.dumps(
            {
                "arch": "small",
                "arch_kwargs": {"width": 4},
                "input_size": 16,
                "mean": [0.4],
                "std": [0.3],
                "class_names": ["a", "b", "c"],
            }
        )
    )
    out = tmp_path / "clf.safetensors"
    result = CliRunner().invoke(main, ["import", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "RUNS PYTHON CODE" not in result.output
    clf = load_classifier(out)
    assert clf.meta.class_names == ("a", "b", "c") and clf.meta.mean == (0.4,)
    info = CliRunner().invoke(main, ["info", str(out)])
    assert info.exit_code == 0 and json.loads(info.output)["class_names"] == ["a", "b", "c"]
