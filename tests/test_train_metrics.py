"""``train.py --metrics ... --detector PATH --metrics-num N`` (stylegan2_ada/training/evaluation.py): a metric
line per snapshot, the values in stats.jsonl, training unchanged by the metrics, resuming continues the
metric files, bad options refused before a run folder exists, failures mid-run logged while training
continues. Tiny runs: 16x16, small networks, a tiny TorchScript detector scripted here."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import click
import pytest
import torch
import torch.multiprocessing as mp
from sg2_training_support.data import make_shapes, tiny_args
from sg2_training_support.detector import TinyDetector, script
from torch import nn

from stylegan2_ada.checkpoint import load_checkpoint
from stylegan2_ada.dataset import open_image_dataset
from stylegan2_ada.metrics import compute_metrics, load_extractor
from stylegan2_ada.training import cli
from stylegan2_ada.training.evaluation import carry_over_metric_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")

METRIC = ("--metrics", "fid50k_full", "--metrics-num", "32")


class BinaryImagesOnly(nn.Module):
    """Works on the load-time probe (zeros) and on the real shapes (0 or 255), fails on generated images."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        assert bool(((img == 0) | (img == 255)).all()), "only black-and-white images"
        return img.float().mean(dim=(2, 3))


def train(outdir: Path, data: Path, *extra: str, kimg: float = 0.016):
    return cli.main(tiny_args(outdir, data, "--cond=1", *extra, kimg=kimg), standalone_mode=False)


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_folders(outdir: Path) -> list[Path]:
    return (
        sorted(p for p in outdir.iterdir() if p.is_dir() and p.name[:5].isdigit()) if outdir.is_dir() else []
    )


@pytest.fixture(scope="module")
def metric_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny conditional run with --metrics fid50k_full --metrics-num 32 --snap 1 (three snapshots)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("metric_run")
        torch.manual_seed(0)
        detector = script(TinyDetector(), root / "detector.pt")
        data = make_shapes(root / "shapes", n=8)
        result = train(root / "runs", data, *METRIC, "--detector", str(detector))
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "data": data, "detector": detector, "result": result}


def test_one_metric_line_per_snapshot_with_its_kimg_and_name(metric_run: dict) -> None:
    result = metric_run["result"]
    run_dir = result.run_dir
    lines = json_lines(run_dir / "metric-fid50k_full.jsonl")
    assert [p.name for p in result.snapshots] == [
        "network-snapshot-000000.004.safetensors",
        "network-snapshot-000000.012.safetensors",
        "network-snapshot-000000.016.safetensors",
    ]
    assert [r["snapshot_pkl"] for r in lines] == [p.name for p in result.snapshots]
    assert [r["kimg"] for r in lines] == [0.004, 0.012, 0.016]
    for r in lines:
        assert r["metric"] == "fid50k_full" and r["num_gen"] == 32 and r["num_real"] == 8
        assert set(r["results"]) == {"fid50k_full", "fid50k_full_class0", "fid50k_full_class1"}
        assert all(math.isfinite(v) and v >= 0 for v in r["results"].values())
        assert r["detector"]["kind"] == "torchscript" and r["detector"]["feature_dim"] == 16
    # Real-image features: extracted once, into the cache under --outdir, then read from it.
    assert [r["real_features"]["cached"] for r in lines] == [False, True, True]
    cache = Path(lines[0]["real_features"]["cache_file"])
    assert cache.parent == metric_run["root"] / "runs" / ".cache" / "metrics" and cache.is_file()

    # stats.jsonl: one extra line per evaluation, with every result key under Metrics/ and the kimg.
    metric_stats = [s for s in json_lines(run_dir / "stats.jsonl") if "Metrics/fid50k_full" in s]
    assert [s["Progress/kimg"]["mean"] for s in metric_stats] == [0.004, 0.012, 0.016]
    for s, r in zip(metric_stats, lines):
        for key, value in r["results"].items():
            assert s[f"Metrics/{key}"]["mean"] == value
    log = (run_dir / "log.txt").read_text()
    last = lines[-1]["results"]["fid50k_full"]
    assert f"Metrics at 0.016 kimg (network-snapshot-000000.016.safetensors): fid50k_full {last:.5g}" in log


def test_the_line_is_the_metric_of_that_snapshot(metric_run: dict) -> None:
    """Recomputing the metric from the last snapshot's G_ema gives the value the run wrote."""
    result = metric_run["result"]
    G_ema = load_checkpoint(result.snapshots[-1]).networks["G_ema"].eval()
    dataset = open_image_dataset(str(metric_run["data"]), use_labels=True)
    detector = load_extractor(metric_run["detector"], log=lambda message: None)
    again = compute_metrics(["fid50k_full"], G_ema, dataset, detector, num_gen=32, progress=False, log=print)
    line = json_lines(result.run_dir / "metric-fid50k_full.jsonl")[-1]
    assert again["fid50k_full"]["results"] == pytest.approx(line["results"], rel=1e-6)


def test_metrics_do_not_change_the_training(metric_run: dict, tmp_path: Path) -> None:
    """The same run without --metrics ends with the very same networks and random state."""
    plain = train(tmp_path / "runs", metric_run["data"])
    with_metrics = load_checkpoint(metric_run["result"].snapshots[-1])
    without = load_checkpoint(plain.snapshots[-1])
    for name in ("G", "D", "G_ema"):
        a, b = with_metrics.networks[name].state_dict(), without.networks[name].state_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{name}.{key}")
    rng = [k for k in with_metrics.tensors if k.startswith("rng/")]
    assert rng
    for key in rng:
        torch.testing.assert_close(with_metrics.tensors[key], without.tensors[key], rtol=0, atol=0, msg=key)


def test_resuming_continues_the_metric_file(metric_run: dict, tmp_path: Path) -> None:
    """Resuming from the middle snapshot: the new run folder's file starts with the old lines up to that
    snapshot (the 0.016 line belongs to the abandoned continuation) and goes on."""
    first = metric_run["result"]
    old_file = first.run_dir / "metric-fid50k_full.jsonl"
    old_text = old_file.read_text()
    resumed = train(
        tmp_path / "runs",
        metric_run["data"],
        *METRIC,
        "--detector",
        str(metric_run["detector"]),
        "--resume",
        str(first.snapshots[1]),
        kimg=0.024,
    )
    assert resumed.run_dir.parent != first.run_dir.parent
    lines = json_lines(resumed.run_dir / "metric-fid50k_full.jsonl")
    assert [r["kimg"] for r in lines] == [0.004, 0.012, 0.020, 0.024]
    assert [r["snapshot_pkl"] for r in lines[2:]] == [p.name for p in resumed.snapshots]
    text = (resumed.run_dir / "metric-fid50k_full.jsonl").read_text()
    assert text.startswith("".join(old_text.splitlines(keepends=True)[:2]))  # carried over unchanged
    assert old_file.read_text() == old_text  # the old run folder is left as it was
    assert "metric-fid50k_full.jsonl 2 line(s) (1 left out)" in (resumed.run_dir / "log.txt").read_text()


def test_resuming_without_metrics_keeps_the_history(metric_run: dict, tmp_path: Path) -> None:
    first = metric_run["result"]
    resumed = train(tmp_path / "runs", metric_run["data"], "--resume", str(first.snapshots[-1]), kimg=0.02)
    assert [r["kimg"] for r in json_lines(resumed.run_dir / "metric-fid50k_full.jsonl")] == [
        0.004,
        0.012,
        0.016,
    ]


def test_carry_over_keeps_the_lines_up_to_the_resumed_kimg(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    kept = [
        json.dumps({"results": {"fid50k_full": 9.0}, "kimg": 4.0}),
        json.dumps(
            {"results": {"fid50k_full": 7.0}, "snapshot_pkl": "network-snapshot-000008.pkl"}
        ),  # upstream's
    ]
    left_out = [
        "{not json",
        json.dumps({"results": {"fid50k_full": 8.0}}),
        json.dumps({"results": {}, "kimg": 12.0}),
    ]
    (old / "metric-fid50k_full.jsonl").write_text(
        "\n".join([kept[0], left_out[0], kept[1], *left_out[1:]]) + "\n"
    )
    (old / "metric-kid50k_full.jsonl").write_text(json.dumps({"results": {}, "kimg": 16.0}) + "\n")
    counts = carry_over_metric_files(old, new, 8.0)
    assert counts == {"metric-fid50k_full.jsonl": (2, 3), "metric-kid50k_full.jsonl": (0, 1)}
    assert (new / "metric-fid50k_full.jsonl").read_text() == "".join(line + "\n" for line in kept)
    assert not (new / "metric-kid50k_full.jsonl").exists()


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    pickled = tmp_path / "whole-model.pt"
    torch.save(nn.Linear(2, 2), pickled)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a network")
    return {
        "data": make_shapes(tmp_path / "shapes", n=4),
        "detector": script(TinyDetector(), tmp_path / "detector.pt"),
        "pickled": pickled,
        "junk": junk,
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--metrics", "fid1k", "--detector", "{detector}"], "--metrics fid1k: unknown metric fid1k; known:"),
        (["--metrics", "fid50k_full"], "--metrics fid50k_full needs --detector PATH"),
        (["--metrics", "fid50k_full", "--detector", "{tmp}/missing.pt"], "missing.pt: no such file"),
        (["--metrics", "fid50k_full", "--detector", "{junk}"], "not a recognised detector file"),
        (["--metrics", "fid50k_full", "--detector", "{pickled}"], "refused: it holds pickled Python objects"),
        (["--detector", "{detector}"], "--detector only applies with --metrics"),
        (["--metrics-num", "8"], "--metrics-num only applies with --metrics"),
        (
            ["--metrics", "kid50k", "--detector", "{detector}", "--metrics-num", "1"],
            "--metrics-num must be >= 2, got 1",
        ),
    ],
)
def test_bad_metric_options_are_refused_before_a_run_folder_exists(
    inputs: dict[str, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    args = [a.format(tmp=tmp_path, **inputs) for a in extra]
    outdir = tmp_path / "runs"
    with pytest.raises(click.UsageError) as err:
        train(outdir, inputs["data"], *args)
    assert message in err.value.message
    assert run_folders(outdir) == []


def test_a_bad_detector_is_one_usage_error_line(inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    outdir = tmp_path / "runs"
    args = ("--metrics", "fid50k_full", "--detector", str(inputs["junk"]))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(tiny_args(outdir, inputs["data"], "--cond=1", *args))
    err = capsys.readouterr().err
    assert (
        exit_info.value.code == 2 and "Error: --detector: " in err and "not a recognised detector file" in err
    )
    assert "Traceback" not in err and run_folders(outdir) == []


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (["--metrics", "fid50k_full", "--metrics-num", "8", "--detector", "{binary_only}"], "DetectorError"),
        (["--metrics", "pr50k3_full", "--metrics-num", "2", "--detector", "{detector}"], "MetricError"),
    ],
)
def test_a_metric_failure_mid_run_is_logged_and_training_continues(
    inputs: dict[str, Path], tmp_path: Path, extra: list[str], error: str
) -> None:
    binary_only = script(BinaryImagesOnly(), tmp_path / "binary_only.pt")
    args = [a.format(binary_only=binary_only, **inputs) for a in extra]
    result = train(tmp_path / "runs", inputs["data"], *args, kimg=0.008)
    assert result.state.cur_nimg == 8 and len(result.snapshots) == 2  # trained to the end, every snapshot
    log = (result.run_dir / "log.txt").read_text()
    warnings_logged = [line for line in log.splitlines() if line.startswith("Warning: metrics at")]
    assert len(warnings_logged) == 2 and all("training continues: " + error in w for w in warnings_logged)
    assert not list(result.run_dir.glob("metric-*.jsonl"))
    assert not any("Metrics/" in line for line in (result.run_dir / "stats.jsonl").read_text().splitlines())


def _rank_worker(rank: int, port: int, args: list[str]) -> None:
    # What torchrun sets for each process.
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    cli.main(args, standalone_mode=False)


def test_two_processes_share_the_evaluation_and_rank_0_writes(
    metric_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two gloo processes: every snapshot is evaluated by both ranks together; the values are those of one
    process (the generated set does not depend on the number of processes)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the spawned workers import this module
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outdir = tmp_path / "runs"
    args = tiny_args(
        outdir,
        metric_run["data"],
        "--cond=1",
        "--gpus",
        "2",
        "--batch",
        "4",
        "--batch-gpu",
        "2",
        "--mbstd-group",
        "2",
        *METRIC,
        "--detector",
        str(metric_run["detector"]),
        kimg=0.008,
    )
    # spawn, not fork: autograd's threads from earlier tests in this process make forked workers fail.
    mp.spawn(_rank_worker, args=(port, args), nprocs=2, join=True)
    (run_dir,) = run_folders(outdir)
    lines = json_lines(run_dir / "metric-fid50k_full.jsonl")
    snapshots = sorted(p.name for p in run_dir.glob("network-snapshot-*"))
    assert [r["snapshot_pkl"] for r in lines] == snapshots and len(snapshots) == 2
    assert all(r["num_gpus"] == 2 for r in lines)
    G_ema = load_checkpoint(run_dir / snapshots[-1]).networks["G_ema"].eval()
    dataset = open_image_dataset(str(metric_run["data"]), use_labels=True)
    detector = load_extractor(metric_run["detector"], log=lambda message: None)
    one = compute_metrics(["fid50k_full"], G_ema, dataset, detector, num_gen=32, progress=False, log=print)
    assert one["fid50k_full"]["results"] == pytest.approx(lines[-1]["results"], rel=1e-5)
