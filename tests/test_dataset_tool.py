"""Tests for stylegan2_ada.dataset_tool: packing a folder (or zip) of images into a training zip."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from stylegan2_ada.dataset import DatasetError, open_image_dataset
from stylegan2_ada.dataset_tool import archive_name, main, pack_dataset
from tests.test_dataset import png_bytes  # noqa: E402  (one hand-written PNG encoder for both files)


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(arr))


def make_source(
    root: Path, n: int = 5, *, channels: int = 1, res: int = 8, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = {}
    for i in range(n):
        rel = f"p{i % 2}/scan{i}.png"
        images[rel] = rng.integers(
            0, 256, (res, res) if channels == 1 else (res, res, channels), dtype=np.uint8
        )
        write_png(root / rel, images[rel])
    return images


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """{relpath: (sha256, mtime_ns)} of every file, to prove the source is untouched."""
    return {
        p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def read_zip(path: Path) -> tuple[dict, dict[str, np.ndarray], list[zipfile.ZipInfo]]:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        meta = json.loads(zf.read("dataset.json"))
        images = {}
        for info in infos:
            if info.filename.endswith(".png"):
                with Image.open(io.BytesIO(zf.read(info))) as im:
                    images[info.filename] = (im.mode, np.asarray(im))
    return meta, images, infos


def test_pack_folder_with_flat_labels(tmp_path):
    src = tmp_path / "src"
    images = make_source(src, 5)
    rels = sorted(images)
    labels = {r: i % 2 for i, r in enumerate(rels)}
    (src / "dataset.json").write_text(json.dumps({**labels, "class_names": ["normal", "abnormal"]}))
    (src / "conversion_report.csv").write_text("a,b\n")
    before = snapshot(src)
    report = pack_dataset(src, tmp_path / "out.zip")
    assert snapshot(src) == before
    assert report.num_images == 5 and report.image_shape == (1, 8, 8) and report.skipped == []
    assert report.labels_format == "flat" and report.labelled == 5 and len(report.ignored) == 1

    meta, packed, infos = read_zip(tmp_path / "out.zip")
    assert [i.filename for i in infos] == [archive_name(i) for i in range(5)] + ["dataset.json"]
    assert archive_name(0) == "00000/img00000000.png" and archive_name(12345) == "00012/img00012345.png"
    assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
    assert meta["class_names"] == ["normal", "abnormal"]
    assert meta["source_files"] == [[archive_name(i), r] for i, r in enumerate(rels)]
    assert meta["labels"] == [[archive_name(i), i % 2] for i in range(5)]
    for i, rel in enumerate(rels):
        mode, arr = packed[archive_name(i)]
        assert mode == "L"
        np.testing.assert_array_equal(arr, images[rel])

    ds = open_image_dataset(tmp_path / "out.zip", use_labels=True)
    assert ds.class_names == ["normal", "abnormal"] and ds.label_dim == 2
    for i, rel in enumerate(rels):
        img, label = ds[i]
        np.testing.assert_array_equal(img[0], images[rel])
        np.testing.assert_array_equal(label, np.eye(2)[i % 2])


def test_upstream_vector_labels_and_rgb_carry_over(tmp_path):
    src = tmp_path / "src"
    images = make_source(src, 3, channels=3)
    rels = sorted(images)
    (src / "dataset.json").write_text(json.dumps({"labels": [[r, [i, 0.5]] for i, r in enumerate(rels)]}))
    report = pack_dataset(src, tmp_path / "out.zip", keep_names=False)
    meta, packed, _ = read_zip(tmp_path / "out.zip")
    assert report.labels_format == "upstream" and "source_files" not in meta
    assert meta["labels"] == [[archive_name(i), [float(i), 0.5]] for i in range(3)]
    for i, rel in enumerate(rels):
        assert packed[archive_name(i)][0] == "RGB"
        np.testing.assert_array_equal(packed[archive_name(i)][1], images[rel])


def test_sixteen_bit_is_scaled_exactly(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 65536, (8, 8)).astype(np.uint16)
    arr[0, :4] = [0, 128, 129, 65535]
    write_png(tmp_path / "src" / "a.png", arr)
    pack_dataset(tmp_path / "src", tmp_path / "out.zip")
    meta, packed, _ = read_zip(tmp_path / "out.zip")
    mode, out = packed[archive_name(0)]
    assert mode == "L" and meta["labels"] is None
    np.testing.assert_array_equal(out, np.round(arr / 257.0).astype(np.uint8))
    assert list(out[0, :4]) == [0, 0, 1, 255]


def test_bad_files_are_skipped_and_reported(tmp_path):
    src = tmp_path / "src"
    images = make_source(src, 4)
    (src / "garbage.png").write_bytes(b"not an image")
    buf = io.BytesIO()
    Image.new("RGBA", (8, 8)).save(buf, format="PNG")
    (src / "alpha.png").write_bytes(buf.getvalue())
    write_png(src / "big.png", np.zeros((16, 16), dtype=np.uint8))
    write_png(src / "color.png", np.zeros((8, 8, 3), dtype=np.uint8))
    (src / "trunc.png").write_bytes(png_bytes(np.zeros((8, 8), dtype=np.uint8))[:45])
    before = snapshot(src)
    report = pack_dataset(src, tmp_path / "out.zip")
    assert snapshot(src) == before
    assert report.num_images == 4
    reasons = dict(report.skipped)
    assert set(reasons) == {"garbage.png", "alpha.png", "big.png", "color.png", "trunc.png"}
    assert "not a PNG or JPEG" in reasons["garbage.png"]
    assert "unsupported image mode 8-bit RGBA PNG" in reasons["alpha.png"]
    assert "size 16x16 differs from most images' 8x8" in reasons["big.png"]
    assert "has 3 channels but most images have 1" in reasons["color.png"]
    assert "trunc.png: corrupt" in reasons["trunc.png"]
    summary = report.summary()
    assert "Skipped 5 images:" in summary and "garbage.png" in summary
    _, packed, _ = read_zip(tmp_path / "out.zip")
    np.testing.assert_array_equal(packed[archive_name(0)][1], images[sorted(images)[0]])


def test_partially_labelled_source_is_reported(tmp_path):
    src = tmp_path / "src"
    images = make_source(src, 3)
    rels = sorted(images)
    (src / "dataset.json").write_text(json.dumps({rels[0]: 1, rels[2]: 0, "deleted.png": 1}))
    report = pack_dataset(src, tmp_path / "out.zip")
    assert report.unlabelled == [rels[1]] and report.labelled == 2
    assert report.unknown_label_paths == ["deleted.png"]
    assert "1 packed images have no label" in report.summary()
    meta, _, _ = read_zip(tmp_path / "out.zip")
    assert meta["labels"] == [[archive_name(0), 1], [archive_name(2), 0]]
    with pytest.raises(DatasetError, match=r"1 of 3 images have no label: 00000/img00000001\.png"):
        open_image_dataset(tmp_path / "out.zip", use_labels=True)


def test_resize_with_lanczos(tmp_path):
    src = tmp_path / "src"
    write_png(src / "flat.png", np.full((16, 16), 100, dtype=np.uint8))
    ramp = np.tile(np.linspace(0, 65535, 16), (16, 1)).astype(np.uint16)  # smooth 16-bit gradient
    write_png(src / "ramp.png", ramp)
    report = pack_dataset(src, tmp_path / "out.zip", resolution=8)
    assert report.image_shape == (1, 8, 8)
    _, packed, _ = read_zip(tmp_path / "out.zip")
    assert (packed[archive_name(0)][1] == 100).all()
    out = packed[archive_name(1)][1].astype(float)
    box = (ramp / 257.0).reshape(8, 2, 8, 2).mean(axis=(1, 3))
    assert np.abs(out - box)[:, 1:-1].max() <= 2  # interior close to the box average; edges ring a little
    assert (np.diff(out[4]) > 0).all()


def test_center_crop_and_pad_are_exact_without_resize(tmp_path):
    rng = np.random.default_rng(2)
    wide = rng.integers(0, 256, (8, 16), dtype=np.uint8)  # H=8, W=16
    write_png(tmp_path / "src" / "wide.png", wide)
    pack_dataset(tmp_path / "src", tmp_path / "crop.zip", resolution=8, transform="center-crop")
    pack_dataset(tmp_path / "src", tmp_path / "pad.zip", resolution=16, transform="pad")
    _, crop, _ = read_zip(tmp_path / "crop.zip")
    _, pad, _ = read_zip(tmp_path / "pad.zip")
    np.testing.assert_array_equal(crop[archive_name(0)][1], wide[:, 4:12])
    expected = np.zeros((16, 16), dtype=np.uint8)
    expected[4:12] = wide
    np.testing.assert_array_equal(pad[archive_name(0)][1], expected)
    write_png(tmp_path / "src" / "square.png", np.zeros((16, 16), dtype=np.uint8))
    report = pack_dataset(tmp_path / "src", tmp_path / "none.zip", resolution=8)
    assert report.num_images == 1 and "not square (16x8); use --transform" in dict(report.skipped)["wide.png"]


def test_channel_conversion(tmp_path):
    src = tmp_path / "src"
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[...] = [10, 20, 30]
    write_png(src / "a.png", rgb)
    write_png(src / "b.png", np.full((8, 8), 77, dtype=np.uint8))
    pack_dataset(src, tmp_path / "l.zip", channels=1)
    pack_dataset(src, tmp_path / "rgb.zip", channels=3)
    _, gray, _ = read_zip(tmp_path / "l.zip")
    _, color, _ = read_zip(tmp_path / "rgb.zip")
    assert gray[archive_name(0)][0] == "L" and (gray[archive_name(0)][1] == 18).all()  # 2.99 + 11.74 + 3.42
    assert (gray[archive_name(1)][1] == 77).all()
    assert color[archive_name(1)][0] == "RGB" and (color[archive_name(1)][1] == 77).all()
    np.testing.assert_array_equal(color[archive_name(0)][1], rgb)


def test_destination_safety(tmp_path):
    src = tmp_path / "src"
    make_source(src, 2)
    dest = tmp_path / "out.zip"
    dest.write_bytes(b"precious")
    with pytest.raises(DatasetError, match="already exists; pass --overwrite"):
        pack_dataset(src, dest)
    assert dest.read_bytes() == b"precious"
    pack_dataset(src, dest, overwrite=True)
    assert zipfile.is_zipfile(dest)
    with pytest.raises(DatasetError, match="destination is the source"):
        pack_dataset(dest, dest, overwrite=True)
    with pytest.raises(DatasetError, match="must be a .zip"):
        pack_dataset(src, tmp_path / "out.tar")

    bad = tmp_path / "bad"
    for i in range(2):
        (bad / f"{i}.png").parent.mkdir(exist_ok=True)
        (bad / f"{i}.png").write_bytes(
            png_bytes(np.zeros((8, 8), dtype=np.uint8))[:45]
        )  # headers fine, bodies cut
    with pytest.raises(DatasetError, match="no usable images; nothing written"):
        pack_dataset(bad, tmp_path / "new" / "x.zip")
    assert os.listdir(tmp_path / "new") == []  # the temporary file is gone
    with pytest.raises(
        DatasetError, match="most images are 16x8 .* not a square power of two; pass --resolution"
    ):
        write_png(tmp_path / "ns" / "a.png", np.zeros((8, 16), dtype=np.uint8))
        pack_dataset(tmp_path / "ns", tmp_path / "ns.zip")


def test_repacking_is_deterministic_and_zip_sources_work(tmp_path):
    src = tmp_path / "src"
    images = make_source(src, 6)
    (src / "dataset.json").write_text(json.dumps({r: 0 for r in images}))
    pack_dataset(src, tmp_path / "a.zip")
    pack_dataset(src, tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    report = pack_dataset(tmp_path / "a.zip", tmp_path / "c.zip", max_images=4)
    assert report.num_images == 4
    a = open_image_dataset(tmp_path / "a.zip", use_labels=True)
    c = open_image_dataset(tmp_path / "c.zip", use_labels=True)
    for i in range(4):
        np.testing.assert_array_equal(a[i][0], c[i][0])
        np.testing.assert_array_equal(a[i][1], c[i][1])


def test_command_line(tmp_path):
    src = tmp_path / "src"
    make_source(src, 3)
    (src / "junk.png").write_bytes(b"junk")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stylegan2_ada.dataset_tool",
            "--source",
            str(src),
            "--dest",
            str(tmp_path / "o.zip"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Wrote 3 images ([C, H, W] = 1x8x8) to {tmp_path / 'o.zip'}" in proc.stdout
    assert "Skipped 1 images:" in proc.stdout and "junk.png" in proc.stdout
    result = CliRunner().invoke(main, ["--source", str(src), "--dest", str(tmp_path / "o.zip")])
    assert result.exit_code == 1 and "already exists; pass --overwrite" in result.output
    result = CliRunner().invoke(
        main, ["--source", str(src), "--dest", str(tmp_path / "r.zip"), "--resolution", "12"]
    )
    assert result.exit_code == 1 and "resolution must be a power of two" in result.output


def _error_line(output: str) -> str:
    assert "Traceback" not in output, output
    (line,) = [line for line in output.splitlines() if line.startswith("Error:")]
    return line


def test_destination_below_a_file_is_one_error_line(tmp_path):
    src = tmp_path / "src"
    make_source(src, 2)
    (tmp_path / "afile").write_text("x")
    for dest in (tmp_path / "afile" / "out.zip", tmp_path / "afile" / "sub" / "out.zip"):
        result = CliRunner().invoke(main, ["--source", str(src), "--dest", str(dest)])
        assert result.exit_code == 1
        assert (
            _error_line(result.output)
            == f"Error: {dest}: cannot write there: {tmp_path / 'afile'} is a file, not a folder"
        )
    assert (tmp_path / "afile").read_text() == "x"


def test_unwritable_destination_is_one_error_line(tmp_path, monkeypatch):
    """Read-only destination folder (simulated: tests may run as root) and disk full while writing."""
    import errno

    from stylegan2_ada import atomic

    src = tmp_path / "src"
    make_source(src, 3)
    before = snapshot(src)
    dest = tmp_path / "out" / "data.zip"
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).startswith(str(tmp_path / "out")) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    with monkeypatch.context() as m:
        m.setattr(atomic.os, "open", read_only)
        result = CliRunner().invoke(main, ["--source", str(src), "--dest", str(dest)])
    assert result.exit_code == 1
    line = _error_line(result.output)
    assert line.startswith(f"Error: {dest}: cannot write the archive: Read-only file system (")

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(zipfile.ZipFile, "writestr", disk_full)
        result = CliRunner().invoke(main, ["--source", str(src), "--dest", str(dest)])
    assert result.exit_code == 1
    assert _error_line(result.output) == f"Error: {dest}: cannot write the archive: No space left on device"
    assert not dest.exists() and os.listdir(dest.parent) == []  # no partial archive, no temporary file
    assert snapshot(src) == before


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes into read-only folders; simulated in the test above"
)
def test_read_only_destination_folder_is_one_error_line(tmp_path):
    src = tmp_path / "src"
    make_source(src, 2)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = CliRunner().invoke(main, ["--source", str(src), "--dest", str(folder / "o.zip")])
    finally:
        folder.chmod(0o755)
    assert result.exit_code == 1
    assert "cannot write the archive: Permission denied" in _error_line(result.output)


def test_absurd_resolution_is_refused_before_any_work(tmp_path):
    src = tmp_path / "src"
    make_source(src, 2)
    result = CliRunner().invoke(
        main, ["--source", str(src), "--dest", str(tmp_path / "o.zip"), "--resolution", str(2**20)]
    )
    assert result.exit_code == 1  # once: gigabytes per image until the machine ran out of memory
    assert (
        _error_line(result.output) == "Error: resolution must be a power of two from 4 to 8192, got 1048576"
    )
    assert not (tmp_path / "o.zip").exists()
