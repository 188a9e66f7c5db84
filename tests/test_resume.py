"""Resume: a resumed run continues exactly (kimg, optimizer, ADA p, pl_mean, EMA, RNG, plugin state);
SIGKILL then ``--resume latest``; snapshots survive a failure mid-write; upstream .pkl transfer;
unusable resume files give one-line errors; snapshots name no machine or person."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from checkpoint_helpers import save_with_header_length
from sg2_training_support.data import REPO, TESTS_DIR, make_shapes, tiny_args

from stylegan2_ada import checkpoint as checkpoint_module
from stylegan2_ada.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stylegan2_ada.training import cli
from stylegan2_ada.training.snapshots import ResumeError, list_snapshots, load_resume_checkpoint, shareable

PLUGIN = "sg2_training_support.extra_loss"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def stats_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def test_resumed_run_continues_exactly_like_an_uninterrupted_one(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "shapes", n=8)
    common = ("--cond=1", "--aug", "ada", "--ada-kimg", "0.05", "--target", "0", "--plugin", PLUGIN)
    # A: 8 steps in one go. B: 4 steps, then --resume latest for 4 more.
    a = cli.main(tiny_args(tmp_path / "a", data, *common, kimg=0.032, snap=100), standalone_mode=False)
    b1 = cli.main(tiny_args(tmp_path / "b", data, *common, kimg=0.016, snap=100), standalone_mode=False)
    b2 = cli.main(
        tiny_args(tmp_path / "b", data, *common, "--resume", "latest", kimg=0.032, snap=100),
        standalone_mode=False,
    )

    assert b1.snapshots[-1].name == "network-snapshot-000000.016.safetensors"
    assert b2.run_dir != b1.run_dir and b2.run_dir.name.startswith(
        "00001-"
    )  # resuming makes a new run folder
    opts = json.loads((b2.run_dir / "training_options.json").read_text())
    assert opts["resumed_from"] == str(b1.snapshots[-1])
    first = stats_lines(b2.run_dir)[0]
    assert first["Progress/kimg"]["mean"] > 0.016 and first["Progress/tick"]["mean"] >= 2  # counters continue
    assert b2.state.cur_nimg == a.state.cur_nimg == 32 and b2.state.batch_idx == a.state.batch_idx == 8
    assert "Resumed at 0.016 kimg" in (b2.run_dir / "log.txt").read_text()

    # Same final networks, optimizer state, ADA p, pl_mean, RNG and plugin state, bit for bit (CPU).
    ca, cb = load_checkpoint(a.snapshots[-1]), load_checkpoint(b2.snapshots[-1])
    for name in ("G", "D", "G_ema", "augment_pipe"):
        sa, sb = ca.networks[name].state_dict(), cb.networks[name].state_dict()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=f"{name}.{k}")
    assert float(ca.networks["augment_pipe"].p) > 0  # p moved (target 0), so its restoration mattered
    assert set(ca.tensors) == set(cb.tensors)
    for k in ca.tensors:
        torch.testing.assert_close(ca.tensors[k], cb.tensors[k], rtol=0, atol=0, msg=k)
    steps = [v for k, v in cb.tensors.items() if k.startswith("optimizer/G/") and k.endswith("/step")]
    # 8 Gmain steps + 2 Greg steps (every 4th) for the parameters the path-length penalty reaches.
    assert steps and {float(s) for s in steps} == {8.0, 10.0}
    assert cb.metadata["plugins"] == ca.metadata["plugins"] == {PLUGIN: {"calls": 16}}
    assert cb.metadata["training_state"] == ca.metadata["training_state"]


def test_optimizer_state_is_restored_from_the_snapshot(tmp_path: Path) -> None:
    """Resuming puts Adam's exp_avg / exp_avg_sq / step of the snapshot into the new optimizers."""
    from stylegan2_ada.training.loop import build_networks, build_phases
    from stylegan2_ada.training.snapshots import load_optimizer_state, parse_resume_data

    data = make_shapes(tmp_path / "shapes", n=4)
    r = cli.main(tiny_args(tmp_path / "r", data, kimg=0.008, snap=100), standalone_mode=False)
    ckpt = load_checkpoint(r.snapshots[-1])
    resume = parse_resume_data(ckpt)
    opts = cli.main(
        tiny_args(tmp_path / "r", data, "--resume", str(r.snapshots[-1]), "-n", kimg=0.1),
        standalone_mode=False,
    )
    G, D, _, _ = build_networks(opts, torch.device("cpu"))
    phases = build_phases(opts, G, D)
    load_optimizer_state(phases[0].opt, resume.optimizer_states["G"], "G")
    state = phases[0].opt.state_dict()["state"]
    assert len(state) == len(list(G.parameters()))
    for idx, st in state.items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(st[key], ckpt.tensors[f"optimizer/G/{idx}/{key}"], rtol=0, atol=0)
    # The current options' hyperparameters stay (lazy-regularisation scaled lr).
    assert phases[0].opt.param_groups[0]["lr"] == pytest.approx(opts.glr * 4 / 5)


def test_sigkill_then_resume_latest_loses_at_most_one_snapshot_interval(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "shapes", n=8)
    outdir = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(TESTS_DIR), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "train.py", *tiny_args(outdir, data, kimg=10, tick=0.008, snap=1)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 240
        while len(list_snapshots(outdir)) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no snapshots appeared"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_dir = next(outdir.iterdir())
    last_tick = stats_lines(run_dir)[-1]["Progress/kimg"]["mean"]
    latest = list_snapshots(outdir)[0]
    snap_kimg = load_checkpoint(latest).metadata["training_state"]["cur_nimg"] / 1000
    assert last_tick - snap_kimg <= 0.008 + 1e-9  # at most one snapshot interval (1 tick) lost

    result = cli.main(
        tiny_args(outdir, data, "--resume", "latest", kimg=snap_kimg + 0.008), standalone_mode=False
    )
    assert result.run_dir != run_dir
    first = stats_lines(result.run_dir)[0]
    assert first["Progress/kimg"]["mean"] == pytest.approx(snap_kimg + 0.008)  # continues from the snapshot
    assert json.loads((result.run_dir / "training_options.json").read_text())["resumed_from"] == str(latest)
    assert result.state.cur_nimg == round((snap_kimg + 0.008) * 1000)


def test_crash_while_writing_a_snapshot_leaves_the_previous_one_intact(tmp_path: Path, monkeypatch) -> None:
    data = make_shapes(tmp_path / "shapes", n=4)
    first = cli.main(
        tiny_args(tmp_path / "runs", data, kimg=0.004), standalone_mode=False
    )  # 1 step, 1 snapshot
    old = first.snapshots[-1]
    digest = hashlib.sha256(old.read_bytes()).hexdigest()

    real_replace = os.replace

    def crash_on_snapshot(src, dst, *args, **kwargs):
        if str(dst).endswith(".safetensors"):
            assert Path(src).exists() and Path(src).stat().st_size > 0  # the temporary file was written
            raise OSError(28, "No space left on device (simulated)")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.os, "replace", crash_on_snapshot)
    with pytest.raises(CheckpointError, match="No space left"):
        cli.main(tiny_args(tmp_path / "runs", data, "--resume", str(old), kimg=0.008), standalone_mode=False)
    monkeypatch.undo()
    crashed_dir = sorted((tmp_path / "runs").iterdir())[-1]
    assert not list(crashed_dir.glob("network-snapshot-*"))  # no partial final file
    assert not [p for p in crashed_dir.iterdir() if p.name.endswith(".tmp")]  # and no stray temporary file
    assert hashlib.sha256(old.read_bytes()).hexdigest() == digest
    assert load_checkpoint(old).metadata["training_state"]["cur_nimg"] == 4
    assert list_snapshots(tmp_path / "runs") == [old]

    # A damaged newer file (e.g. truncated by a full disk outside our control) is skipped by 'latest'.
    bad_dir = tmp_path / "runs" / "00007-damaged"
    bad_dir.mkdir()
    (bad_dir / "network-snapshot-000009.safetensors").write_bytes(old.read_bytes()[:1000])
    assert list_snapshots(tmp_path / "runs")[0].parent == bad_dir
    with pytest.warns(UserWarning, match="skipping unusable snapshot.*truncated"):
        ckpt = load_resume_checkpoint("latest", tmp_path / "runs")
    assert Path(ckpt.path) == old


def test_resume_from_upstream_pkl_takes_the_weights(tmp_path: Path, upstream_pkl_path: Path) -> None:
    pkl = upstream_pkl_path
    up = load_checkpoint(pkl)
    data = make_shapes(tmp_path / "shapes32", n=4, res=32)
    # The fixture's architecture: cbase 512, cmax 64, map 2, c_dim 2, 1 channel (z/w 64 come from the pkl).
    args = [
        "--outdir",
        str(tmp_path / "runs"),
        "--data",
        str(data),
        "--cond=1",
        "--resume",
        str(pkl),
        "--batch",
        "4",
        "--cbase",
        "512",
        "--cmax",
        "64",
        "--map-depth",
        "2",
        "--kimg",
        "0.004",
        "--glr",
        "1e-12",
        "--dlr",
        "1e-12",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--snap",
        "1",
    ]
    result = cli.main(args, standalone_mode=False)
    opts = json.loads((result.run_dir / "training_options.json").read_text())
    assert (opts["z_dim"], opts["w_dim"], opts["ada_kimg"], opts["ema_rampup"]) == (64, 64, 100, None)
    assert opts["resume_format"] == "weights" and opts["resumed_from"] == str(pkl)
    log = (result.run_dir / "log.txt").read_text()
    assert "Resume (weights only): G: copied" in log and "skipped" not in log
    for name, net in (("G", result.G), ("D", result.D)):
        ref = up.networks[name].state_dict()
        for k, v in net.state_dict().items():
            if k.endswith("w_avg"):
                continue  # moves during the training step
            torch.testing.assert_close(v, ref[k], rtol=0, atol=1e-5, msg=f"{name}.{k}")
    # G_ema took one EMA step towards G (no ramp-up when transferring): beta = 0.5 ** (4 / 10000).
    beta = 0.5 ** (4 / (opts["ema_kimg"] * 1000))
    g_ref, ema_ref = up.networks["G"].state_dict(), up.networks["G_ema"].state_dict()
    params = dict(result.G_ema.named_parameters())
    for k, v in result.G_ema.state_dict().items():
        if k.endswith("w_avg"):
            continue
        expected = (
            ema_ref[k].lerp(g_ref[k], 1 - beta) if k in params else g_ref[k]
        )  # buffers are copied from G
        torch.testing.assert_close(v, expected, rtol=0, atol=1e-5, msg=f"G_ema.{k}")
    assert result.state.cur_nimg == 4  # transfer learning starts the counter at 0


# --------------------------------------------------------------------------------------------------
# Issue 8: unusable resume files give one-line ResumeErrors; snapshots name no machine or person and
# clean the temporary files of killed saves.

STALE = [".network-snapshot-000004.safetensors.0123456789ab.tmp", ".tmpAb3xZ9"]
KEPT = [".notes.tmp", ".tmpQw9Er7"]  # a user's file; a fresh temp file (maybe a live writer's)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, object]:
    """One tiny run (1 step, 1 snapshot) under ``runs/``, beside a run folder a killed save left dirty."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trained")
    data = make_shapes(root / "shapes", n=4)
    killed = root / "runs" / "00000-killed"
    killed.mkdir(parents=True)
    for name in STALE + KEPT:
        (killed / name).write_bytes(b"partial")
    old = time.time() - 2 * 3600
    for name in STALE + KEPT[:1]:
        os.utime(killed / name, (old, old))
    try:
        result = cli.main(tiny_args(root / "runs", data, kimg=0.004), standalone_mode=False)
    finally:
        torch.set_num_threads(threads)
    return root, data, result


def test_snapshot_save_removes_temp_files_of_killed_saves(trained) -> None:
    root, _, result = trained
    assert sorted(os.listdir(root / "runs" / "00000-killed")) == sorted(KEPT)
    assert result.snapshots and not [p for p in result.run_dir.iterdir() if p.name.startswith(".")]


def test_snapshot_names_no_machine_or_person(trained) -> None:
    root, data, result = trained
    snapshot = result.snapshots[-1]
    loaded = load_checkpoint(snapshot)
    assert "host" not in loaded.provenance
    options = loaded.metadata["training_options"]
    assert options["data"] == data.name == "shapes" and options["outdir"] == "runs"
    header = snapshot.read_bytes()[8 : 8 + int.from_bytes(snapshot.read_bytes()[:8], "little")].decode()
    assert str(root) not in header and socket.gethostname() not in header
    local = json.loads((result.run_dir / "training_options.json").read_text())  # stays on the machine
    assert local["data"] == str(data)


def test_shareable_reduces_paths_to_their_last_component() -> None:
    assert shareable(
        {"data": "/home/ann/site-3/spine/", "labels": "rel/dir/labels.csv", "cfg": "auto", "n": 3, "x": None}
    ) == {"data": "spine", "labels": "labels.csv", "cfg": "auto", "n": 3, "x": None}
    assert shareable({"plugin_options": {"files": ["/a/b.csv", "c.csv"]}}) == {
        "plugin_options": {"files": ["b.csv", "c.csv"]}
    }
    assert shareable("/") == "/" and shareable(None) is None


def test_resume_latest_from_a_snapshot_whose_header_length_looks_like_a_pickle(trained, tmp_path) -> None:
    """Issue 8 defect 1: 'generate' failed and '--resume latest' crashed with a traceback."""
    _, data, result = trained
    snap = load_checkpoint(result.snapshots[-1])
    crafted = tmp_path / "runs" / "00000-crafted" / result.snapshots[-1].name
    crafted.parent.mkdir(parents=True)
    save_with_header_length(
        crafted, 0x010280, networks=snap.networks, tensors=snap.tensors, metadata=snap.metadata
    )
    assert crafted.read_bytes()[:2] == b"\x80\x02"
    torch.set_num_threads(1)
    resumed = cli.main(
        tiny_args(tmp_path / "runs", data, "--resume", "latest", kimg=0.008), standalone_mode=False
    )
    assert (
        resumed.state.cur_nimg == 8 and "Resumed at 0.004 kimg" in (resumed.run_dir / "log.txt").read_text()
    )


def _one_line_resume_error(spec: str, outdir: Path, *expected: str) -> str:
    with pytest.raises(ResumeError) as info:
        load_resume_checkpoint(spec, outdir)
    message = str(info.value)
    assert "\n" not in message and all(e in message for e in expected), message
    return message


def test_unusable_resume_files_give_one_line_errors(trained, tmp_path) -> None:
    _, _, result = trained
    good = result.snapshots[-1].read_bytes()
    outdir = tmp_path / "runs"
    run = outdir / "00000-x"
    run.mkdir(parents=True)

    flipped = run / "network-snapshot-000000.004.safetensors"
    flipped.write_bytes(good[:-10] + bytes([good[-10] ^ 0x10]) + good[-9:])
    _one_line_resume_error(str(flipped), outdir, f"--resume {flipped}: ", "content hash mismatch")
    with pytest.warns(UserWarning, match="skipping unusable snapshot"):
        _one_line_resume_error("latest", outdir, "none of the 1 snapshots", str(flipped))

    # Looks like a pickle (signature, STOP byte) but is garbage: the .pkl reader's error, not a traceback.
    pickle_like = run / "network-snapshot-000009.safetensors"
    pickle_like.write_bytes(b"\x80\x02" + bytes(range(7, 200)) + b".")
    _one_line_resume_error(str(pickle_like), outdir, str(pickle_like), "pickle")
    with pytest.warns(UserWarning, match="skipping unusable snapshot"):
        _one_line_resume_error("latest", outdir, "none of the 2 snapshots")

    # A training snapshot whose training state is incomplete (hash intact: written that way).
    snap = load_checkpoint(result.snapshots[-1])
    for name, broken in (("no-counter", {"training_state": {}}), ("no-rng", {"rng": [{}]})):
        path = tmp_path / f"{name}.safetensors"
        save_checkpoint(
            path, networks=snap.networks, tensors=snap.tensors, metadata={**snap.metadata, **broken}
        )
        _one_line_resume_error(str(path), outdir, str(path), "incomplete training snapshot")
