"""calc_metrics.py end to end (a tiny generator snapshot, a tiny dataset and a tiny TorchScript detector
scripted here; also the upstream .pkl fixture), its errors, and the curves command."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import FIXTURE_PKL, needs_fixture, tiny_g_kwargs
from PIL import Image
from sg2_training_support.data import make_shapes
from sg2_training_support.detector import TinyDetector, script
from torch import nn

from stylegan2_ada import checkpoint
from stylegan2_ada.metrics import curves
from stylegan2_ada.networks import Generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]


def _load_cli():
    spec = importlib.util.spec_from_file_location("calc_metrics_cli", ROOT / "calc_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


CLI = _load_cli()


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    snapshot = tmp_path / "run" / "network-snapshot-000004.safetensors"
    snapshot.parent.mkdir()
    G = Generator(**tiny_g_kwargs(16, 2, 1))
    checkpoint.save_checkpoint(
        snapshot, networks={"G_ema": G}, metadata={"training_state": {"cur_nimg": 4000}}
    )
    detector = tmp_path / "detector.pt"
    script(TinyDetector(), detector)
    return {
        "snapshot": snapshot,
        "data": make_shapes(tmp_path / "shapes", n=16, res=16),
        "detector": detector,
        "cache": tmp_path / "cache",
    }


def _run(*args: str):
    return CliRunner().invoke(CLI, [*args, "--quiet", "--device", "cpu", "--workers", "0"])


def _args(s: dict[str, Path], *extra: str) -> list[str]:
    return [
        "--network",
        str(s["snapshot"]),
        "--data",
        str(s["data"]),
        "--detector",
        str(s["detector"]),
        "--cache-dir",
        str(s["cache"]),
        *extra,
    ]


def test_calc_metrics_writes_metric_jsonl_beside_the_network(setup: dict[str, Path]) -> None:
    result = _run(*_args(setup, "--metrics", "fid50k_full,kid50k_full,pr50k3_full", "--num", "16"))
    assert result.exit_code == 0, result.output
    assert "TorchScript" in result.output and "fid50k_full: fid50k_full " in result.output
    run = setup["snapshot"].parent
    for name, keys in (
        ("fid50k_full", {"fid50k_full", "fid50k_full_class0", "fid50k_full_class1"}),
        ("kid50k_full", {"kid50k_full", "kid50k_full_class0", "kid50k_full_class1"}),
        ("pr50k3_full", {"pr50k3_full_precision", "pr50k3_full_recall"}),
    ):
        (line,) = (run / f"metric-{name}.jsonl").read_text().splitlines()
        record = json.loads(line)
        assert keys <= set(record["results"]) and record["metric"] == name
        assert record["snapshot_pkl"] == "network-snapshot-000004.safetensors" and record["kimg"] == 4.0
        assert record["num_gen"] == 16 and record["num_real"] == 16 and record["num_gpus"] == 1
        assert record["detector"]["kind"] == "torchscript" and record["detector"]["feature_dim"] == 16
    first = json.loads((run / "metric-fid50k_full.jsonl").read_text())
    assert first["real_features"]["cached"] is False

    again = _run(*_args(setup, "--metrics", "fid50k_full", "--num", "16"))
    assert again.exit_code == 0, again.output
    lines = [json.loads(x) for x in (run / "metric-fid50k_full.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["real_features"]["cached"] is True
    assert lines[1]["results"] == lines[0]["results"]


def test_calc_metrics_one_class_into_an_outdir(setup: dict[str, Path], tmp_path: Path) -> None:
    result = _run(
        *_args(
            setup, "--metrics", "fid50k_full", "--num", "8", "--class", "1", "--outdir", str(tmp_path / "out")
        )
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "metric-fid50k_full.jsonl").read_text())
    assert record["class"] == 1 and record["num_real"] == 8 and set(record["results"]) == {"fid50k_full"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--metrics": "fid1k"}, "unknown metric fid1k"),
        ({"--detector": "missing.pt"}, "detector file not found"),
        ({"--network": "missing.safetensors"}, "network file not found"),
        ({"--class": "7"}, "class 7 has no images"),
    ],
)
def test_calc_metrics_errors_are_one_line(
    setup: dict[str, Path], change: dict[str, str], message: str
) -> None:
    args = _args(setup, "--metrics", "fid50k_full", "--num", "8")
    for option, value in change.items():
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    result = _run(*args)
    assert result.exit_code != 0
    assert message in result.output and "Error" in result.output
    assert "Traceback" not in result.output and not isinstance(
        result.exception, (TypeError, KeyError, RuntimeError)
    )


@needs_fixture
def test_calc_metrics_reads_upstream_pkl_snapshots(setup: dict[str, Path], tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "shapes32", n=12, res=32)  # the fixture: 32x32, 1 channel, 2 classes
    result = _run(
        *_args(setup, "--metrics", "fid50k_full", "--num", "8", "--outdir", str(tmp_path / "out"))
        + ["--network", str(FIXTURE_PKL), "--data", str(data)]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "metric-fid50k_full.jsonl").read_text())
    assert record["snapshot_pkl"] == FIXTURE_PKL.name and record["results"]["fid50k_full"] > 0


def _fake_run(folder: Path, fids: list[float], losses: list[float]) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "metric-fid50k_full.jsonl", "w") as f:
        for i, fid in enumerate(fids):
            record = {"results": {"fid50k_full": fid, "fid50k_full_class0": fid + 1}, "metric": "fid50k_full"}
            f.write(
                json.dumps({**record, "snapshot_pkl": f"network-snapshot-{4 * (i + 1):06d}.safetensors"})
                + "\n"
            )
        f.write("{not json\n")
    with open(folder / "stats.jsonl", "w") as f:
        for i, loss in enumerate(losses):
            f.write(
                json.dumps(
                    {
                        "Progress/kimg": {"num": 1, "mean": 2.0 * (i + 1), "std": 0},
                        "Loss/G/loss": {"num": 4, "mean": loss, "std": 0.1},
                        "timestamp": 0,
                    }
                )
                + "\n"
            )
    return folder


def test_curves_read_runs_and_plot_several_on_one_png(tmp_path: Path) -> None:
    a = _fake_run(tmp_path / "with-domain-loss", [50.0, 30.0, 20.0], [1.0, 0.8, 0.7, 0.6])
    b = _fake_run(tmp_path / "without", [55.0, 45.0, 40.0], [1.1, 0.9, 0.9, 0.8])
    metric_curves, skipped = curves.read_metric_curves(a)
    assert metric_curves["fid50k_full"] == [(4.0, 50.0), (8.0, 30.0), (12.0, 20.0)] and skipped == 1
    stats_curves, _ = curves.read_stats_curves(a)
    assert stats_curves["Loss/G/loss"][0] == (2.0, 1.0)
    result = CliRunner().invoke(
        curves.main, [str(a), str(b), "--out", str(tmp_path / "c.png"), "--labels", "with,without"]
    )
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "c.png") as img:
        assert img.format == "PNG" and img.width > 500 and img.height > 200


def test_curves_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(curves.main, [str(tmp_path / "empty"), "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 1 and "nothing to plot" in result.output
    result = CliRunner().invoke(curves.main, [str(tmp_path / "nope"), "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 1 and "not a folder" in result.output
    assert not (tmp_path / "c.png").exists()


class OnlyLargeImages(nn.Module):
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        assert img.shape[2] >= 32, "images too small for this network"
        return img.float().mean(dim=(2, 3))


def test_a_detector_failing_on_the_data_is_one_error_line(setup: dict[str, Path], tmp_path: Path) -> None:
    detector = tmp_path / "large.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(OnlyLargeImages()).save(str(detector))  # passes the 64x64 probe at load time
    args = _args(setup, "--metrics", "fid50k_full", "--num", "8")
    args[args.index("--detector") + 1] = str(detector)
    result = _run(*args)
    assert result.exit_code == 1 and "Error:" in result.output and "images too small" in result.output
    assert "Traceback" not in result.output
