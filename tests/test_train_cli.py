"""Tests of train.py's command line: dry run, presets and overrides, plugin options, clear usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
from sg2_training_support.data import REPO, TESTS_DIR, make_shapes, tiny_args

from stylegan2_ada.checkpoint import save_checkpoint
from stylegan2_ada.networks import Generator
from stylegan2_ada.training import cli

PLUGIN = "sg2_training_support.extra_loss"


@pytest.fixture(autouse=True)
def _plugins_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS_DIR))


@pytest.fixture()
def shapes(tmp_path: Path) -> Path:
    return make_shapes(tmp_path / "shapes", n=4)


@pytest.fixture()
def unlabelled(tmp_path: Path) -> Path:
    return make_shapes(tmp_path / "plain", n=4, labels=False)


def run(args: list[str]):
    return cli.main(args, standalone_mode=False)


def test_dry_run_resolves_preset_with_overrides(tmp_path: Path, shapes: Path, capsys) -> None:
    opts = run(
        [
            "--outdir",
            str(tmp_path / "o"),
            "--data",
            str(shapes),
            "--cond",
            "--cbase",
            "1024",
            "--glr",
            "0.001",
            "--mbstd-group",
            "2",
            "--device",
            "cpu",
            "--desc",
            "try 1",
            "-n",
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == opts.to_dict()
    # auto preset at 16x16 on 1 GPU: batch 32, ... ; overrides applied.
    assert (opts.batch, opts.batch_gpu, opts.cbase, opts.cmax, opts.glr, opts.dlr, opts.mbstd_group) == (
        32,
        32,
        1024,
        512,
        0.001,
        0.0025,
        2,
    )
    assert opts.desc == "shapes-cond-auto1-try_1"
    assert not (tmp_path / "o").exists()  # a dry run creates nothing


def test_default_workers_fit_the_cpus(tmp_path: Path, shapes: Path, monkeypatch) -> None:
    base = ["--outdir", str(tmp_path), "--data", str(shapes), "--device", "cpu", "-n"]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert run(base).workers == 2  # upstream's 3, capped by the 2 CPUs (torch warns above that)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert run(base).workers == 3
    assert run(base + ["--workers", "5"]).workers == 5  # an explicit choice is kept
    assert run(base + ["--workers", "0"]).workers == 0


def test_cond_flag_accepts_upstream_spelling(tmp_path: Path, shapes: Path) -> None:
    base = ["--outdir", str(tmp_path), "--data", str(shapes), "--device", "cpu", "-n"]
    assert run(base + ["--cond=1"]).c_dim == 2
    assert run(base + ["--cond=0"]).c_dim == 0
    assert run(base + ["--cond", "--mirror=1"]).mirror is True


def test_help_lists_plugin_options() -> None:
    out = subprocess.run(
        [sys.executable, "train.py", "--plugin", PLUGIN, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR)},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for flag in ("--extra-weight", "--device", "--plugin", "--resume", "--aug", "--ada-kimg", "--batch-gpu"):
        assert flag in out.stdout


def _net(tmp_path: Path, res: int) -> Path:
    G = Generator(
        z_dim=8,
        c_dim=0,
        w_dim=8,
        img_resolution=res,
        img_channels=1,
        synthesis_kwargs={"channel_base": 64, "channel_max": 8},
    )
    path = tmp_path / f"g{res}.safetensors"
    save_checkpoint(path, networks={"G": G})
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--p", "0.3"], "--p can only be given with --aug=fixed"),
        (["--aug", "fixed"], "--aug=fixed needs --p"),
        (["--aug", "noaug", "--target", "0.5"], "--target only applies to --aug=ada"),
        (["--aug", "fixed", "--p", "0.2", "--ada-kimg", "10"], "--ada-kimg only applies to --aug=ada"),
        (["--batch", "6", "--batch-gpu", "4"], "--batch=6 must be divisible by --batch-gpu=4"),
        (["--batch", "8", "--batch-gpu", "3", "--mbstd-group", "2"], "must be divisible by --batch-gpu=3"),
        (
            ["--batch", "6", "--batch-gpu", "6", "--mbstd-group", "4"],
            "divisible by the minibatch-std group size 4",
        ),
        (["--gpus", "2"], "torchrun --nproc_per_node=2"),
        (["--batch", "3", "--gpus", "2"], "--batch=3 must be divisible by --gpus=2"),
        (["--metrics", "fid50k_full"], "--metrics fid50k_full needs --detector PATH"),
        (["--kimg", "0"], "--kimg must be > 0"),
        (["--kimg", "inf"], "--kimg must be a finite number, got inf"),
        (["--gamma", "nan"], "--gamma must be a finite number, got nan"),
        (["--glr", "-1"], "--glr must be > 0, got -1.0"),
        (["--freezed", "99"], "--freezed=99: D has 7 layers that can be frozen at 16x16"),
        (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
        (["--subset", "100"], "--subset=100 is larger than the dataset (4 images)"),
        (["--resume", "no/such/file.pkl"], "--resume no/such/file.pkl: no such file"),
        (["--resume", "latest"], "--resume latest: no network-snapshot-*"),
    ],
)
def test_invalid_combinations_give_clear_usage_errors(tmp_path: Path, shapes: Path, extra, message) -> None:
    with pytest.raises(click.UsageError) as err:
        run(["--outdir", str(tmp_path / "o"), "--data", str(shapes), "--device", "cpu", "-n", *extra])
    assert message in err.value.message


def test_cond_on_unlabelled_data_is_a_usage_error(tmp_path: Path, unlabelled: Path) -> None:
    with pytest.raises(click.UsageError, match="--cond needs labels"):
        run(["--outdir", str(tmp_path), "--data", str(unlabelled), "--cond=1", "--device", "cpu", "-n"])


def test_resume_network_of_another_resolution_is_refused(tmp_path: Path, shapes: Path) -> None:
    path = _net(tmp_path, 32)
    with pytest.raises(click.UsageError, match=r"the network is 32x32 but the data is 16x16"):
        run(
            ["--outdir", str(tmp_path), "--data", str(shapes), "--resume", str(path), "--device", "cpu", "-n"]
        )
    ok = run(
        [
            "--outdir",
            str(tmp_path),
            "--data",
            str(shapes),
            "--resume",
            str(_net(tmp_path, 16)),
            "--device",
            "cpu",
            "-n",
        ]
    )
    assert (ok.resume_format, ok.z_dim, ok.w_dim, ok.ada_kimg, ok.ema_rampup) == ("weights", 8, 8, 100, None)


def test_unknown_plugin_and_plugin_validation(tmp_path: Path, shapes: Path) -> None:
    with pytest.raises(click.UsageError, match="no-such-plugin"):
        run(["--outdir", str(tmp_path), "--data", str(shapes), "--plugin", "no-such-plugin", "-n"])
    with pytest.raises(click.UsageError, match="--extra-weight must be >= 0"):
        run(
            [
                "--outdir",
                str(tmp_path),
                "--data",
                str(shapes),
                "--plugin",
                PLUGIN,
                "--extra-weight",
                "-1",
                "-n",
                "--device",
                "cpu",
            ]
        )


def test_cuda_request_without_cuda(tmp_path: Path, shapes: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(click.UsageError, match="no CUDA device is available"):
        run(["--outdir", str(tmp_path), "--data", str(shapes), "--device", "cuda", "-n"])


def test_cli_exit_status_and_message_for_errors(tmp_path: Path, shapes: Path) -> None:
    out = subprocess.run(
        [sys.executable, "train.py", *tiny_args(tmp_path, shapes, "--p", "0.5")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "Error: --p can only be given with --aug=fixed" in out.stderr
