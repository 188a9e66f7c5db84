"""generate.py end to end (native checkpoint made here, and the upstream .pkl fixture) and its errors."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_helpers import save_with_header_length
from click.testing import CliRunner
from conftest import FIXTURE_PKL, needs_fixture, tiny_g_kwargs
from PIL import Image

from stylegan2_ada import checkpoint as ckpt
from stylegan2_ada import generation

ROOT = Path(__file__).resolve().parents[1]
networks_mod = pytest.importorskip(
    "stylegan2_ada.networks", reason="stylegan2_ada/networks.py not written yet"
)


def _load_cli():
    spec = importlib.util.spec_from_file_location("generate_cli", ROOT / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


CLI = _load_cli()


def _run(*args: str):
    return CliRunner().invoke(CLI, [*args, "--quiet"], catch_exceptions=False)


def _tiny_checkpoint(path: Path, *, c_dim: int, img_channels: int, class_names=None, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    G = networks_mod.Generator(
        z_dim=8,
        c_dim=c_dim,
        w_dim=8,
        img_resolution=8,
        img_channels=img_channels,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 64, "channel_max": 8},
    )
    with torch.no_grad():  # non-zero noise strengths so that the noise mode matters
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    metadata = {"class_names": class_names} if class_names else {}
    ckpt.save_checkpoint(path, networks={"G_ema": G}, metadata=metadata)
    return path


@pytest.fixture
def cond_gray(tmp_path) -> Path:
    return _tiny_checkpoint(
        tmp_path / "cond.safetensors", c_dim=2, img_channels=1, class_names=["normal", "fracture"]
    )


@pytest.fixture
def uncond_rgb(tmp_path) -> Path:
    return _tiny_checkpoint(tmp_path / "uncond.safetensors", c_dim=0, img_channels=3)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).copy()


def _expected(network: Path, seed: int, class_idx, psi: float) -> np.ndarray:
    """The image of one seed, computed independently of generation.py (const noise)."""
    G = ckpt.load_checkpoint(network).networks.get("G_ema")
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim))
    c = torch.zeros(1, G.c_dim)
    if class_idx is not None:
        c[0, class_idx] = 1
    with torch.no_grad():
        img = G(z, c, truncation_psi=psi, noise_mode="const")
    img = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    return img[:, :, 0] if img.shape[2] == 1 else img


def test_native_conditional_grayscale_end_to_end(tmp_path, cond_gray):
    out = tmp_path / "out"
    result = _run(
        "--network",
        str(cond_gray),
        "--seeds",
        "0-2,7",
        "--class",
        "1",
        "--trunc",
        "0.7",
        "--outdir",
        str(out),
        "--batch",
        "3",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == [
        "manifest.json",
        "seed0000.png",
        "seed0001.png",
        "seed0002.png",
        "seed0007.png",
    ]
    for seed in (0, 1, 2, 7):
        with Image.open(out / f"seed{seed:04d}.png") as image:
            assert image.mode == "L" and image.size == (8, 8)
        np.testing.assert_array_equal(
            _pixels(out / f"seed{seed:04d}.png"), _expected(cond_gray, seed, 1, 0.7)
        )
    assert not np.array_equal(_pixels(out / "seed0000.png"), _pixels(out / "seed0001.png"))

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["network"]["sha256"] == hashlib.sha256(cond_gray.read_bytes()).hexdigest()
    assert manifest["network"]["format"] == "native" and manifest["network"]["generator"] == "G_ema"
    assert manifest["seeds"] == [0, 1, 2, 7]
    assert manifest["class"] == 1 and manifest["class_name"] == "fracture"
    assert manifest["truncation_psi"] == 0.7 and manifest["noise_mode"] == "const"
    assert manifest["device"] == "cpu" and manifest["batch_size"] == 3
    assert (
        manifest["versions"]["torch"] == torch.__version__ and manifest["versions"]["numpy"] == np.__version__
    )
    assert manifest["versions"]["stylegan2_ada"]
    assert [i["file"] for i in manifest["images"]] == [
        "seed0000.png",
        "seed0001.png",
        "seed0002.png",
        "seed0007.png",
    ]


def test_native_unconditional_rgb_and_batch_independence(tmp_path, uncond_rgb):
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        _run("--network", str(uncond_rgb), "--seeds", "3,4,5", "--outdir", str(a), "--batch", "1").exit_code
        == 0
    )
    assert (
        _run("--network", str(uncond_rgb), "--seeds", "5,3-4", "--outdir", str(b), "--batch", "16").exit_code
        == 0
    )
    for seed in (3, 4, 5):
        with Image.open(a / f"seed{seed:04d}.png") as image:
            assert image.mode == "RGB" and image.size == (8, 8)
        np.testing.assert_array_equal(_pixels(a / f"seed{seed:04d}.png"), _pixels(b / f"seed{seed:04d}.png"))
        np.testing.assert_array_equal(
            _pixels(a / f"seed{seed:04d}.png"), _expected(uncond_rgb, seed, None, 1.0)
        )


def test_random_noise_is_reproducible_per_seed_and_leaves_global_rng_alone(tmp_path, uncond_rgb):
    runs = {}
    for name, seeds, batch in [("all", [0, 1, 2], 2), ("alone", [2], 1), ("again", [2, 0], 5)]:
        torch.manual_seed(1234)
        state = torch.get_rng_state()
        result = generation.generate_images(
            uncond_rgb,
            seeds,
            tmp_path / name,
            noise_mode="random",
            batch_size=batch,
            device="cpu",
            progress=False,
        )
        assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
        runs[name] = {seed: _pixels(path) for seed, path in result.files.items()}
    np.testing.assert_array_equal(runs["all"][2], runs["alone"][2])
    np.testing.assert_array_equal(runs["all"][0], runs["again"][0])
    const = generation.generate_images(uncond_rgb, [2], tmp_path / "const", device="cpu", progress=False)
    assert not np.array_equal(_pixels(const.files[2]), runs["alone"][2])  # random noise really is used
    none = generation.generate_images(
        uncond_rgb, [2], tmp_path / "none", noise_mode="none", device="cpu", progress=False
    )
    assert not np.array_equal(_pixels(none.files[2]), _pixels(const.files[2]))


@needs_fixture
def test_upstream_pkl_end_to_end(tmp_path):
    out = tmp_path / "out"
    result = _run(
        "--network",
        str(FIXTURE_PKL),
        "--seeds",
        "0-1,10",
        "--class",
        "1",
        "--trunc",
        "0.7",
        "--outdir",
        str(out),
        "--noise-mode",
        "const",
        "--batch",
        "2",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    for seed in (0, 1, 10):
        with Image.open(out / f"seed{seed:04d}.png") as image:
            assert image.mode == "L" and image.size == (32, 32)
        np.testing.assert_array_equal(
            _pixels(out / f"seed{seed:04d}.png"), _expected(FIXTURE_PKL, seed, 1, 0.7)
        )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["network"]["format"] == "upstream-pkl"
    assert manifest["network"]["sha256"] == hashlib.sha256(FIXTURE_PKL.read_bytes()).hexdigest()
    assert manifest["class_name"] is None and manifest["seeds"] == [0, 1, 10]
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary files left


@needs_fixture
def test_upstream_pkl_conditional_without_class_lists_the_classes(tmp_path):
    result = _run("--network", str(FIXTURE_PKL), "--seeds", "0", "--outdir", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert (
        "--class" in result.output
        and "conditional with 2 classes" in result.output
        and "0, 1" in result.output
    )
    assert not (tmp_path / "o").exists()


def test_class_errors(tmp_path, cond_gray, uncond_rgb):
    out = str(tmp_path / "o")
    result = _run("--network", str(cond_gray), "--seeds", "0", "--outdir", out)
    assert (
        result.exit_code == 2 and "0 (normal), 1 (fracture)" in result.output and "'--class'" in result.output
    )
    result = _run("--network", str(cond_gray), "--seeds", "0", "--outdir", out, "--class", "2")
    assert (
        result.exit_code == 2
        and "class 2 is out of range" in result.output
        and "1 (fracture)" in result.output
    )
    result = _run("--network", str(cond_gray), "--seeds", "0", "--outdir", out, "--class", "-1")
    assert result.exit_code == 2 and "out of range" in result.output
    result = _run("--network", str(uncond_rgb), "--seeds", "0", "--outdir", out, "--class", "0")
    assert result.exit_code == 2 and "unconditional" in result.output
    assert not Path(out).exists()


@pytest.mark.parametrize("seeds", ["", "1-x", "5-2", "-3", "1,,2", "0-99999999999", "a"])
def test_bad_seed_syntax(tmp_path, cond_gray, seeds):
    result = _run(
        "--network", str(cond_gray), "--seeds", seeds, "--class", "0", "--outdir", str(tmp_path / "o")
    )
    assert result.exit_code == 2
    assert "'--seeds'" in result.output
    assert not (tmp_path / "o").exists()


def test_parse_seeds():
    assert generation.parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
    assert generation.parse_seeds(" 7 , 2-3, 7 ") == [7, 2, 3]
    assert generation.parse_seeds(str(generation.MAX_SEED)) == [generation.MAX_SEED]
    with pytest.raises(generation.GenerationError):
        generation.parse_seeds(str(generation.MAX_SEED + 1))


def test_network_file_errors(tmp_path):
    out = str(tmp_path / "o")
    missing = tmp_path / "nope.safetensors"
    result = _run("--network", str(missing), "--seeds", "0", "--outdir", out)
    assert result.exit_code == 2 and "not found" in result.output and "nope.safetensors" in result.output
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a network" * 10)
    result = _run("--network", str(garbage), "--seeds", "0", "--outdir", out)
    assert (
        result.exit_code == 2
        and "unrecognised file format" in result.output
        and "garbage.pkl" in result.output
    )
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    result = _run("--network", str(empty), "--seeds", "0", "--outdir", out)
    assert result.exit_code == 2 and "empty" in result.output
    result = _run("--network", str(tmp_path), "--seeds", "0", "--outdir", out)
    assert result.exit_code == 2 and "folder" in result.output
    assert not Path(out).exists()


def test_malicious_network_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "side_effect"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": Evil()}, protocol=4))
    result = _run("--network", str(evil), "--seeds", "0", "--outdir", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "builtins.exec" in result.output and "not on the allow-list" in result.output
    assert not marker.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_closely(tmp_path, uncond_rgb):
    cpu = generation.generate_images(uncond_rgb, [0, 1], tmp_path / "cpu", device="cpu", progress=False)
    cuda = generation.generate_images(uncond_rgb, [0, 1], tmp_path / "cuda", device="cuda", progress=False)
    for seed in (0, 1):
        diff = np.abs(_pixels(cpu.files[seed]).astype(int) - _pixels(cuda.files[seed]).astype(int))
        assert diff.max() <= 2


def test_script_runs_as_a_program(tmp_path, uncond_rgb):
    """``python generate.py`` from the repository root (a real process, as a user runs it)."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "generate.py",
            "--network",
            str(uncond_rgb),
            "--seeds",
            "0-1",
            "--outdir",
            str(out),
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        (out / "seed0000.png").is_file()
        and (out / "seed0001.png").is_file()
        and (out / "manifest.json").is_file()
    )
    assert "Wrote 2 images" in proc.stdout


# --------------------------------------------------------------------------------------------------
# Issue 8: non-finite numbers, file-system failures, stale temporary files, pickle-looking headers.


def _one_error_line(result) -> str:
    """The output of a failed run: exactly one line, ``Error: ...`` (no usage text, no traceback)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize("psi", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_non_finite_truncation_is_refused(tmp_path, uncond_rgb, psi):
    out = tmp_path / "o"
    result = _run("--network", str(uncond_rgb), "--seeds", "0", "--outdir", str(out), "--trunc", psi)
    assert result.exit_code == 2 and "'--trunc'" in result.output and "finite" in result.output
    assert not out.exists()
    with pytest.raises(generation.GenerationError, match="finite") as info:
        generation.generate_images(uncond_rgb, [0], out, truncation_psi=float(psi), progress=False)
    assert info.value.param == "trunc" and not out.exists()


def test_manifest_is_strict_json(tmp_path, uncond_rgb):
    result = generation.generate_images(uncond_rgb, [0], tmp_path / "o", truncation_psi=-0.5, progress=False)

    def refuse(constant: str):
        raise AssertionError(f"manifest holds {constant}, which is not JSON")

    manifest = json.loads(result.manifest_path.read_text(), parse_constant=refuse)
    assert manifest["truncation_psi"] == -0.5
    assert (
        manifest["network"]["file"] == uncond_rgb.name
        and str(tmp_path) not in result.manifest_path.read_text()
    )


def test_outdir_below_a_file_is_one_error_line(tmp_path, uncond_rgb):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    result = _run("--network", str(uncond_rgb), "--seeds", "0", "--outdir", str(afile / "sub" / "deeper"))
    assert result.exit_code == 1
    assert f"{afile} is a file, not a folder" in _one_error_line(result)
    assert afile.read_text() == "not a folder"


def test_outdir_that_refuses_writes_is_one_error_line(tmp_path, uncond_rgb, monkeypatch):
    """A read-only file system (simulated: root may write anywhere, so chmod cannot show it here)."""
    from stylegan2_ada import atomic

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system", os.path.dirname(path))

    monkeypatch.setattr(atomic, "_temp_beside", read_only)
    out = tmp_path / "o"
    result = _run("--network", str(uncond_rgb), "--seeds", "0-2", "--outdir", str(out))
    assert result.exit_code == 1
    line = _one_error_line(result)
    assert "cannot write" in line and "seed0000.png" in line and "Read-only file system" in line
    assert list(out.iterdir()) == []


def test_unreadable_network_file_is_one_error_line(tmp_path, uncond_rgb, monkeypatch):
    def unreadable(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(ckpt, "sha256_file", unreadable)
    result = _run("--network", str(uncond_rgb), "--seeds", "0", "--outdir", str(tmp_path / "o"))
    assert result.exit_code == 1
    line = _one_error_line(result)
    assert str(uncond_rgb) in line and "Permission denied" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions (the simulated tests cover it)")
def test_read_only_outdir_and_unreadable_network_for_real(tmp_path, uncond_rgb):
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o555)
    result = _run("--network", str(uncond_rgb), "--seeds", "0", "--outdir", str(read_only))
    assert result.exit_code == 1 and "Permission denied" in _one_error_line(result)
    result = _run("--network", str(uncond_rgb), "--seeds", "0", "--outdir", str(read_only / "sub"))
    assert result.exit_code == 1 and "Permission denied" in _one_error_line(result)
    uncond_rgb.chmod(0)
    result = _run("--network", str(uncond_rgb), "--seeds", "0", "--outdir", str(tmp_path / "o"))
    assert result.exit_code == 1 and "Permission denied" in _one_error_line(result)


def test_stale_temporary_files_in_outdir_are_removed(tmp_path, uncond_rgb):
    out = tmp_path / "o"
    out.mkdir()
    old = time.time() - 3600
    for name in (
        ".seed0000.png.0123456789ab.tmp",
        ".tmpAb3xZ9",
        ".notes.tmp",
        ".seed0001.png.fresh00000000.tmp",
    ):
        (out / name).write_bytes(b"x")
        os.utime(out / name, (old, old))
    (out / ".manifest.json.abcdefabcdef.tmp").write_bytes(b"x")  # fresh: maybe a concurrent run's
    generation.generate_images(uncond_rgb, [0], out, progress=False)
    assert sorted(os.listdir(out)) == [
        ".manifest.json.abcdefabcdef.tmp",
        ".notes.tmp",
        ".seed0001.png.fresh00000000.tmp",  # 'fresh0000000' is not hex: not ours
        "manifest.json",
        "seed0000.png",
    ]


def test_network_whose_header_length_looks_like_a_pickle(tmp_path):
    """Issue 8 defect 1 through generate.py: 'not a readable pickle ... KeyError(1)' before the fix."""
    torch.manual_seed(0)
    G = networks_mod.Generator(**tiny_g_kwargs(c_dim=0, channels=3))
    network = save_with_header_length(
        tmp_path / "network-snapshot-000000.056.safetensors", 0x010280, networks={"G_ema": G}
    )
    assert network.read_bytes()[:2] == b"\x80\x02"
    out = tmp_path / "out"
    assert _run("--network", str(network), "--seeds", "0", "--outdir", str(out)).exit_code == 0
    np.testing.assert_array_equal(_pixels(out / "seed0000.png"), _expected(network, 0, None, 1.0))
