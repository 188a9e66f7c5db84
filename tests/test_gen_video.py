"""gen_video.py and stylegan2_ada.video: keyframe loops, class morphs, the MP4 written, and errors."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stylegan2_ada import checkpoint as ckpt
from stylegan2_ada import generation, networks, video

ROOT = Path(__file__).resolve().parents[1]


def _load_cli():
    spec = importlib.util.spec_from_file_location("gen_video_cli", ROOT / "gen_video.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


CLI = _load_cli()


def _run(*args: str):
    return CliRunner().invoke(CLI, [*args, "--quiet"])


def _checkpoint(path: Path, *, c_dim: int, img_channels: int) -> Path:
    torch.manual_seed(1)
    G = networks.Generator(
        z_dim=8,
        c_dim=c_dim,
        w_dim=8,
        img_resolution=8,
        img_channels=img_channels,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 64, "channel_max": 8},
    )
    metadata = {"class_names": ["normal", "abnormal"]} if c_dim == 2 else {}
    ckpt.save_checkpoint(path, networks={"G_ema": G}, metadata=metadata)
    return path


@pytest.fixture
def cond_gray(tmp_path) -> Path:
    return _checkpoint(tmp_path / "cond.safetensors", c_dim=2, img_channels=1)


@pytest.fixture
def uncond_rgb(tmp_path) -> Path:
    return _checkpoint(tmp_path / "uncond.safetensors", c_dim=0, img_channels=3)


def _decode(path: Path) -> tuple[dict, list[np.ndarray]]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]
    return meta, frames


def _generated(network: Path, seeds: list[int], class_idx: int | None, psi: float = 1.0) -> np.ndarray:
    """generate.py's images for ``seeds`` (uint8 [N, H, W, C]), one seed at a time."""
    G = ckpt.load_checkpoint(network).networks["G_ema"]
    label = generation.class_label(G.c_dim, class_idx)
    out = [img for _, img in generation.synthesize(G, seeds, label, truncation_psi=psi, batch_size=1)]
    return np.stack(out)


def _frames(network: Path, ws, grid, batch_size: int = 1) -> list[np.ndarray]:
    G = ckpt.load_checkpoint(network).networks["G_ema"]
    return list(video.render_frames(G, ws, grid, batch_size=batch_size))


def test_loop_video_frame_count_size_and_content(tmp_path, cond_gray):
    out = tmp_path / "clips" / "walk.mp4"
    result = _run(
        "--network", str(cond_gray), "--seeds", "0-3", "--grid", "2x1", "--w-frames", "3", "--class", "1",
        "--trunc", "0.8", "--fps", "10", "--output", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Wrote 6 frames (16x8, 10 fps)" in result.output
    assert sorted(os.listdir(out.parent)) == ["walk.mp4"]  # no temporary file left behind
    meta, frames = _decode(out)
    assert meta["size"] == (16, 8) and len(frames) == 2 * 3 and meta["fps"] == 10
    # The decoded frames are the rendered ones, up to the codec (grey, so all channels equal).
    G = ckpt.load_checkpoint(cond_gray).networks["G_ema"]
    table = video.keyframe_seeds([0, 1, 2, 3], 2, None)
    label = generation.class_label(2, 1)
    ws = video.loop_ws(G, table, label, truncation_psi=0.8, w_frames=3, device=torch.device("cpu"))
    expected = list(video.render_frames(G, ws, (2, 1)))
    for got, want in zip(frames, expected):
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 4
    assert not np.array_equal(expected[0], expected[1])  # it moves


def test_keyframes_are_exactly_the_generated_images(cond_gray):
    G = ckpt.load_checkpoint(cond_gray).networks["G_ema"]
    table = video.keyframe_seeds([5, 9, 3], 1, 3)  # 1x1 grid, 3 keyframes
    assert table == [[5], [9], [3]]
    label = generation.class_label(2, 0)
    ws = video.loop_ws(G, table, label, truncation_psi=0.7, w_frames=4, device=torch.device("cpu"))
    frames = _frames(cond_gray, ws, (1, 1))
    assert len(frames) == 12
    expected = _generated(cond_gray, [5, 9, 3], 0, psi=0.7)  # [3, 8, 8, 1]
    for k in range(3):
        np.testing.assert_array_equal(frames[4 * k], np.repeat(expected[k], 3, axis=2))
    assert not np.array_equal(frames[1], frames[0]) and not np.array_equal(frames[1], frames[4])


def test_loop_spline_is_periodic_smooth_and_passes_through_keyframes():
    keys = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0))
    spline = video.LoopSpline(keys)
    for k in range(4):
        assert torch.equal(spline(k), keys[k])
    assert torch.equal(spline(4), keys[0]) and torch.equal(spline(-1), keys[3])
    eps = 1e-3
    torch.testing.assert_close(spline(4 - eps), spline(-eps), rtol=0, atol=1e-5)  # the seam is continuous
    left = (spline(0.0) - spline(-eps)) / eps
    right = (spline(eps) - spline(0.0)) / eps
    torch.testing.assert_close(left, right, rtol=0, atol=0.05)  # and so is the slope (C1 at the seam)
    middle = spline(1.5)
    assert not torch.allclose(middle, 0.5 * (keys[1] + keys[2]), atol=1e-3)  # cubic, not linear
    assert torch.equal(video.LoopSpline(keys[:1])(0.3), keys[0])  # one keyframe: a still


def test_keyframe_seed_table_and_grid_parsing():
    assert video.keyframe_seeds([1, 2, 3], 2, 3) == [[1, 2], [3, 1], [2, 3]]
    assert video.keyframe_seeds([1, 2, 3, 4], 2, None) == [[1, 2], [3, 4]]
    with pytest.raises(generation.GenerationError, match="do not fill a 2-cell grid"):
        video.keyframe_seeds([1, 2, 3], 2, None)
    assert video.parse_grid("3x2") == (3, 2)
    for bad in ("3", "0x2", "2x", "axb"):
        with pytest.raises(generation.GenerationError, match="bad grid"):
            video.parse_grid(bad)
    assert video.parse_classes("0,1,0") == [0, 1, 0]
    for bad in ("0", "0,0", "a,1"):
        with pytest.raises(generation.GenerationError):
            video.parse_classes(bad)


def test_morph_endpoints_equal_generate_for_each_class(cond_gray):
    G = ckpt.load_checkpoint(cond_gray).networks["G_ema"]
    seeds = [4, 7]
    ws = list(video.morph_ws(G, seeds, [0, 1], truncation_psi=1.0, w_frames=5, device=torch.device("cpu")))
    assert len(ws) == 6  # 5 steps from class 0, then class 1 itself
    for i, seed in enumerate(seeds):  # one cell at a time: the same computation as generate.py
        frames = _frames(cond_gray, [w[i : i + 1] for w in ws], (1, 1))
        np.testing.assert_array_equal(frames[0], np.repeat(_generated(cond_gray, [seed], 0)[0], 3, axis=2))
        np.testing.assert_array_equal(frames[-1], np.repeat(_generated(cond_gray, [seed], 1)[0], 3, axis=2))
        assert not np.array_equal(frames[0], frames[-1])
        steps = [np.abs(b.astype(int) - a.astype(int)).sum() for a, b in zip(frames, frames[1:])]
        assert steps[0] < max(steps)  # eased: slow start
    loop = list(
        video.morph_ws(G, seeds, [0, 1, 0], truncation_psi=1.0, w_frames=5, device=torch.device("cpu"))
    )
    assert len(loop) == 10 and torch.equal(loop[5], ws[-1])


def test_morph_cli_writes_a_video(tmp_path, cond_gray):
    out = tmp_path / "morph.mp4"
    result = _run("--network", str(cond_gray), "--seeds", "1-2", "--grid", "2x1", "--morph", "0,1,0",
                  "--w-frames", "4", "--output", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    meta, frames = _decode(out)
    assert len(frames) == 8 and meta["size"] == (16, 8)


def test_webm_output(tmp_path, cond_gray):
    out = tmp_path / "walk.webm"
    result = _run("--network", str(cond_gray), "--seeds", "0-1", "--w-frames", "3", "--class", "0",
                  "--output", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a Matroska/WebM file
    meta, frames = _decode(out)
    assert meta["codec"] == "vp9" and meta["size"] == (8, 8) and len(frames) == 6


def test_batching_does_not_change_frames(cond_gray):
    G = ckpt.load_checkpoint(cond_gray).networks["G_ema"]
    label = generation.class_label(2, 1)
    table = video.keyframe_seeds([0, 1, 2, 3], 2, None)
    ws = list(video.loop_ws(G, table, label, truncation_psi=1.0, w_frames=3, device=torch.device("cpu")))
    one = _frames(cond_gray, ws, (2, 1), batch_size=1)
    many = _frames(cond_gray, ws, (2, 1), batch_size=7)
    assert len(one) == len(many) == 6
    for a, b in zip(one, many):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_unconditional_rgb_network_and_odd_sizes(tmp_path, uncond_rgb):
    out = tmp_path / "rgb.mp4"
    result = _run("--network", str(uncond_rgb), "--seeds", "0-2", "--grid", "3x1", "--num-keyframes", "2",
                  "--w-frames", "2", "--output", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    meta, frames = _decode(out)
    assert meta["size"] == (24, 8) and len(frames) == 4
    assert np.abs(frames[0].astype(int)[..., 0] - frames[0].astype(int)[..., 2]).max() > 8  # real colour
    odd = video.tile(np.full((3, 5, 5, 1), 200, np.uint8), (3, 1))
    assert (
        odd.shape == (6, 16, 3) and odd[:5, :15].min() == 200 and odd[5].max() == 0 and odd[:, 15].max() == 0
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "2x"], "bad grid"),
        (["--seeds", "0-2", "--grid", "2x1"], "do not fill"),
        (["--class", "5"], "class 5 is out of range; valid classes: 0 (normal), 1 (abnormal)"),
        ([], "choose one with --class K"),
        (["--morph", "0,1", "--class", "1"], "exclude each other"),
        (["--morph", "0,3"], "class 3 is out of range"),
        (["--morph", "0,1", "--num-keyframes", "2"], "does not apply"),
        (["--output", "{tmp}/x.gif", "--class", "0"], "must be a .mp4 or .webm file"),
        (["--network", "{tmp}/missing.safetensors", "--class", "0"], "network file not found"),
    ],
)
def test_errors_are_one_clear_line(tmp_path, cond_gray, args, message):
    base = {"--network": str(cond_gray), "--seeds": "0", "--output": str(tmp_path / "v.mp4")}
    given = dict(zip(args[::2], [a.format(tmp=tmp_path) for a in args[1::2]]))
    argv = [item for key, value in {**base, **given}.items() for item in (key, value)]
    result = _run(*argv)
    assert result.exit_code == 2, result.output
    assert "Error" in result.output and message in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, generation.GenerationError)
    assert not (tmp_path / "v.mp4").exists()


def test_morph_needs_a_conditional_network(tmp_path, uncond_rgb):
    result = _run(
        "--network", str(uncond_rgb), "--seeds", "0", "--morph", "0,1", "--output", str(tmp_path / "m.mp4")
    )
    assert result.exit_code == 2 and "needs a conditional network" in result.output
