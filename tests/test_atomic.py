"""Atomic writes: outputs get the usual permissions (not mkstemp's 0600), failures leave nothing behind,
leftovers of killed writers are recognised and cleaned; the shared JSON and PNG writers."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, tiny_g_kwargs
from PIL import Image

from data_processing.pngio import read_png, write_png
from stylegan2_ada.atomic import (
    TEMP_NAME_RE,
    atomic_write,
    clean_stale_temp_files,
    default_file_mode,
    write_json_atomic,
    write_png_atomic,
)
from stylegan2_ada.checkpoint import load_checkpoint, save_checkpoint
from stylegan2_ada.networks import Generator


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_default_mode_follows_umask(umask_022):
    assert default_file_mode() == 0o644
    os.umask(0o077)
    assert default_file_mode() == 0o600


def test_every_writer_gives_usual_permissions(tmp_path, umask_022):
    atomic_write(tmp_path / "a.bin", lambda f: f.write(b"x"))
    write_json_atomic(tmp_path / "b.json", {"k": 1})
    write_png(tmp_path / "c.png", np.arange(16, dtype=np.uint8).reshape(4, 4))
    G = Generator(**tiny_g_kwargs())
    save_checkpoint(tmp_path / "d.safetensors", networks={"G": G})
    for name in ("a.bin", "b.json", "c.png", "d.safetensors"):
        assert _mode(tmp_path / name) == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.bin",
        "b.json",
        "c.png",
        "d.safetensors",
    ]  # no temp files
    assert (read_png(tmp_path / "c.png") == np.arange(16).reshape(4, 4)).all()
    loaded = load_checkpoint(tmp_path / "d.safetensors").networks["G"]
    for (name, a), b in zip(G.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_failed_write_keeps_the_old_file(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(dest, fail)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def _age(path, seconds: float = 7200) -> None:
    """Make ``path`` look last written ``seconds`` ago."""
    old = time.time() - seconds
    os.utime(path, (old, old), follow_symlinks=False)


def test_clean_stale_temp_files_removes_only_our_and_safetensors_leftovers(tmp_path):
    stale = [".snap.safetensors.0123456789ab.tmp", ".seed0000.png.deadbeef0042.tmp", ".tmpAb3xZ9"]
    fresh = [".manifest.json.00000000ffff.tmp", ".tmpQw9Er7"]  # maybe a live writer's: kept
    users = [
        ".notes.tmp",  # no random part
        ".snap.safetensors.0123456789AB.tmp",  # upper-case hex: not ours
        ".snap.safetensors.0123456789a.tmp",  # 11 digits
        "snap.safetensors.0123456789ab.tmp",  # not hidden
        ".tmpAb3xZ",  # 5 characters
        ".tmpAb3xZ99",  # 7 characters
        ".tmp_b3xZ9",  # not a letter or digit
        "report.tmp",
        "network-snapshot-000000.safetensors",
    ]
    for name in stale + fresh + users:
        (tmp_path / name).write_bytes(b"x")
    for name in stale + users:
        _age(tmp_path / name)
    (tmp_path / ".tmpDirect").mkdir()  # a folder with a matching name
    _age(tmp_path / ".tmpDirect")
    (tmp_path / ".tmpLinkXy").symlink_to(tmp_path / "report.tmp")  # a link with a matching name
    _age(tmp_path / ".tmpLinkXy")

    removed = clean_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(fresh + users + [".tmpDirect", ".tmpLinkXy"])
    assert sorted(p.name for p in clean_stale_temp_files(tmp_path, older_than_s=0)) == sorted(fresh)
    assert clean_stale_temp_files(tmp_path / "missing") == []


def test_a_save_killed_before_its_rename_leaves_a_temp_file_the_next_run_removes(tmp_path):
    """Issue 8 defect 7: SIGKILL between writing and renaming (a real process) leaves our temp file."""
    script = f"""
import os, signal, sys
sys.path[:0] = [{str(REPO_ROOT)!r}, {str(REPO_ROOT / "tests")!r}]
from conftest import tiny_g_kwargs
from stylegan2_ada import atomic
from stylegan2_ada.checkpoint import save_checkpoint
from stylegan2_ada.networks import Generator
atomic.os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
save_checkpoint({str(tmp_path / "snap.safetensors")!r}, networks={{"G": Generator(**tiny_g_kwargs())}})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    leftovers = [p for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and TEMP_NAME_RE.fullmatch(leftovers[0].name), leftovers
    assert leftovers[0].stat().st_size > 0 and not (tmp_path / "snap.safetensors").exists()
    assert clean_stale_temp_files(tmp_path, older_than_s=0) == leftovers
    assert list(tmp_path.iterdir()) == []


def test_write_json_atomic_refuses_nan_and_infinity(tmp_path):
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="cannot be written as JSON") as info:
            write_json_atomic(tmp_path / "m.json", {"psi": [1.0, bad]})
        assert str(tmp_path / "m.json") in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_write_png_atomic_modes(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = np.arange(36, dtype=np.uint8).reshape(3, 4, 3)
    write_png_atomic(tmp_path / "a.png", gray)
    write_png_atomic(tmp_path / "b.png", gray[:, :, None])
    write_png_atomic(tmp_path / "c.png", rgb)
    for name, mode, expected in (("a.png", "L", gray), ("b.png", "L", gray), ("c.png", "RGB", rgb)):
        with Image.open(tmp_path / name) as image:
            assert image.mode == mode and image.format == "PNG"
            np.testing.assert_array_equal(np.asarray(image), expected)
    for bad in (gray.astype(np.uint16), rgb[:, :, :2], np.zeros(5, np.uint8)):
        with pytest.raises(ValueError, match="cannot save"):
            write_png_atomic(tmp_path / "bad.png", bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]
