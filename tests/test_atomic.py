"""Atomic writes: outputs get the usual permissions (not mkstemp's 0600), failures leave nothing behind."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from conftest import tiny_g_kwargs

from data_processing.pngio import read_png, write_png
from stylegan2_ada.atomic import atomic_write, default_file_mode, write_json_atomic
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
