"""Tests for stylegan2_ada.dataset: folders and zips of PNG/JPEG images, labels, errors, workers.

Every dataset is built here in tmp_path (8x8 or 16x16 images). PNGs are written by a small encoder in
this file (8/16-bit grayscale/RGB), so the code under test is checked against independently made files.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_processing.scale import scale_16_to_8
from stylegan2_ada.dataset import (
    DatasetError,
    ImageDataset,
    decode_image,
    open_image_dataset,
    parse_dataset_json,
    scale_16bit_to_8bit,
)

PNG_SIG = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------
# Helpers


def png_bytes(arr: np.ndarray) -> bytes:
    """Encode uint8/uint16 [H, W] (grayscale) or [H, W, 3] (RGB) as a PNG, filter type 0."""
    h, w = arr.shape[:2]
    depth = 16 if arr.dtype == np.uint16 else 8
    raw = arr.astype(">u2" if depth == 16 else "u1").tobytes()
    row = len(raw) // h
    data = b"".join(b"\x00" + raw[i * row : (i + 1) * row] for i in range(h))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, depth, 0 if arr.ndim == 2 else 2, 0, 0, 0)
    return PNG_SIG + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


def write_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(arr))
    return path


def pil_bytes(mode: str, fmt: str = "PNG", size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format=fmt)
    return buf.getvalue()


def chw(arr: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, C] -> [C, H, W] (what the dataset returns)."""
    return arr[np.newaxis] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def make_folder(
    root: Path, n: int, *, channels: int = 1, res: int = 8, seed: int = 0
) -> dict[str, np.ndarray]:
    """n random images, every other one in a subfolder; returns {relpath: array}."""
    rng = np.random.default_rng(seed)
    images = {}
    for i in range(n):
        rel = f"sub/img{i:02d}.png" if i % 2 else f"img{i:02d}.png"
        shape = (res, res) if channels == 1 else (res, res, channels)
        images[rel] = rng.integers(0, 256, shape, dtype=np.uint8)
        write_png(root / rel, images[rel])
    return images


def zip_folder(
    folder: Path, dest: Path, compression: int = zipfile.ZIP_STORED, reverse: bool = False
) -> Path:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if reverse:
        files = files[::-1]
    with zipfile.ZipFile(dest, "w", compression) as zf:
        for p in files:
            zf.write(p, p.relative_to(folder).as_posix())
    return dest


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj))


def all_items(ds: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
    imgs, labels = zip(*(ds[i] for i in range(len(ds))))
    return np.stack(imgs), np.stack(labels)


# ---------------------------------------------------------------------------------------------------
# Images and labels


def test_folder_with_flat_labels_gives_images_and_one_hot(tmp_path):
    images = make_folder(tmp_path, 6)
    rels = sorted(images)
    write_json(tmp_path / "dataset.json", {rel: i % 3 for i, rel in enumerate(rels)})
    ds = open_image_dataset(tmp_path, use_labels=True)
    assert len(ds) == 6 and ds.num_images == 6
    assert ds.image_shape == [1, 8, 8] and ds.resolution == 8 and ds.num_channels == 1
    assert ds.name == tmp_path.name
    assert ds.has_labels and ds.label_dim == 3 and ds.label_shape == [3] and ds.class_names is None
    for i, rel in enumerate(rels):
        img, label = ds[i]
        assert ds.relpath(i) == rel
        assert img.dtype == np.uint8 and img.shape == (1, 8, 8)
        np.testing.assert_array_equal(img, chw(images[rel]))
        assert label.dtype == np.float32
        np.testing.assert_array_equal(label, np.eye(3, dtype=np.float32)[i % 3])
        np.testing.assert_array_equal(ds.get_label(i), label)
    assert ds.raw_labels.dtype == np.int64
    np.testing.assert_array_equal(ds.raw_labels, [i % 3 for i in range(6)])
    assert ds.class_counts() == {0: 2, 1: 2, 2: 2}


def test_upstream_and_flat_label_formats_agree(tmp_path):
    images = make_folder(tmp_path / "a", 5)
    make_folder(tmp_path / "b", 5)
    labels = {rel: (i * 7) % 4 for i, rel in enumerate(sorted(images))}
    write_json(tmp_path / "a" / "dataset.json", labels)
    write_json(tmp_path / "b" / "dataset.json", {"labels": [[k, v] for k, v in reversed(labels.items())]})
    a = open_image_dataset(tmp_path / "a", use_labels=True)
    b = open_image_dataset(tmp_path / "b", use_labels=True)
    _, la = all_items(a)
    _, lb = all_items(b)
    np.testing.assert_array_equal(la, lb)
    assert a.label_dim == b.label_dim == max(labels.values()) + 1
    np.testing.assert_array_equal(la.argmax(1), [labels[r] for r in sorted(labels)])


def test_class_names_widen_label_dim_and_show_in_describe(tmp_path):
    images = make_folder(tmp_path, 4)
    labels = [[rel, int(i == 3)] for i, rel in enumerate(sorted(images))]
    write_json(tmp_path / "dataset.json", {"labels": labels, "class_names": ["normal", "abnormal", "x", "y"]})
    ds = open_image_dataset(tmp_path, use_labels=True)
    assert ds.label_dim == 4 and ds.class_names == ["normal", "abnormal", "x", "y"]
    np.testing.assert_array_equal(ds[3][1], [0, 1, 0, 0])
    assert ds.class_counts() == {0: 3, 1: 1, 2: 0, 3: 0}
    text = ds.describe()
    assert "class 0 normal: 3" in text and "class 1 abnormal: 1" in text and "class 3 y: 0" in text
    assert "normal: 3" in repr(ds) and "abnormal: 1" in repr(ds)


def test_float_vector_labels_are_kept(tmp_path):
    images = make_folder(tmp_path, 3)
    vecs = {rel: [i * 0.5, -1.25, 3] for i, rel in enumerate(sorted(images))}
    write_json(tmp_path / "dataset.json", {"labels": [[k, v] for k, v in vecs.items()]})
    ds = open_image_dataset(tmp_path, use_labels=True)
    assert ds.label_dim == 3 and ds.has_labels
    for i, rel in enumerate(sorted(images)):
        np.testing.assert_array_equal(ds[i][1], np.asarray(vecs[rel], dtype=np.float32))
    assert ds.raw_labels.shape == (3, 3) and ds.raw_labels.dtype == np.float32
    assert ds.class_counts() is None and "float vectors of length 3" in ds.describe()


def test_without_labels_label_is_empty(tmp_path):
    make_folder(tmp_path, 3)
    write_json(tmp_path / "dataset.json", {"labels": None})
    ds = open_image_dataset(tmp_path)
    img, label = ds[0]
    assert label.shape == (0,) and label.dtype == np.float32
    assert not ds.has_labels and ds.label_dim == 0 and ds.raw_labels is None
    with pytest.raises(DatasetError, match=r'dataset\.json.*"labels" is null'):
        open_image_dataset(tmp_path, use_labels=True)


def test_missing_dataset_json_is_unlabelled_or_an_error_naming_it(tmp_path):
    make_folder(tmp_path, 2)
    ds = open_image_dataset(tmp_path)
    assert not ds.has_labels
    with pytest.raises(DatasetError) as err:
        open_image_dataset(tmp_path, use_labels=True)
    assert str(tmp_path / "dataset.json") in str(err.value) and "does not exist" in str(err.value)


def test_dataset_json_in_subfolder_gets_a_hint(tmp_path):
    make_folder(tmp_path, 2)
    write_json(tmp_path / "sub" / "dataset.json", {})
    with pytest.raises(DatasetError, match=r"sub/dataset\.json in a subfolder"):
        open_image_dataset(tmp_path, use_labels=True)


def test_backslash_and_dot_paths_in_labels_match(tmp_path):
    images = make_folder(tmp_path, 2)
    write_json(tmp_path / "dataset.json", {"img00.png": 0, ".\\sub\\img01.png": 1})
    ds = open_image_dataset(tmp_path, use_labels=True)
    np.testing.assert_array_equal(ds.raw_labels, [0, 1])
    assert sorted(images) == [ds.relpath(0), ds.relpath(1)]


# ---------------------------------------------------------------------------------------------------
# Pixel formats


def test_16bit_grayscale_is_scaled_by_round_x_over_257(tmp_path):
    edges = [0, 1, 128, 129, 256, 257, 385, 386, 32767, 32768, 32896, 65406, 65407, 65408, 65534, 65535]
    rng = np.random.default_rng(1)
    values = np.concatenate([edges, rng.integers(0, 65536, 256 - len(edges))]).astype(np.uint16)
    arr = values.reshape(16, 16)
    write_png(tmp_path / "a.png", arr)
    expected = np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)  # no ties exist for integers
    ds = open_image_dataset(tmp_path)
    np.testing.assert_array_equal(ds[0][0][0], expected)
    data = (tmp_path / "a.png").read_bytes()
    for backend in ("pyspng", "pillow"):
        np.testing.assert_array_equal(decode_image(data, "a.png", backend=backend)[:, :, 0], expected)
    np.testing.assert_array_equal(decode_image(data, "a.png", keep_16bit=True)[:, :, 0], arr)


def test_one_16_to_8_bit_rule_for_training_and_conversion():
    """Every 16-bit value: the core's rule is round(x / 257), and data_processing's 'full' scaling is it."""
    x = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.round(x.astype(np.float64) / 257.0).astype(np.uint8)  # x / 257 never ends in .5
    np.testing.assert_array_equal(scale_16bit_to_8bit(x), expected)
    np.testing.assert_array_equal(scale_16_to_8(x, "full"), expected)


def test_16bit_rgb_uses_pyspng_and_pillow_refuses(tmp_path):
    rng = np.random.default_rng(2)
    arr = rng.integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    write_png(tmp_path / "a.png", arr)
    ds = open_image_dataset(tmp_path)
    np.testing.assert_array_equal(ds[0][0], chw(np.round(arr / 257.0).astype(np.uint8)))
    with pytest.raises(DatasetError, match=r"a\.png: 16-bit RGB PNG needs pyspng"):
        decode_image((tmp_path / "a.png").read_bytes(), "a.png", backend="pillow")


def test_pyspng_and_pillow_give_identical_arrays():
    rng = np.random.default_rng(3)
    cases = [
        rng.integers(0, 256, (16, 16), dtype=np.uint8),
        rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        rng.integers(0, 65536, (16, 16)).astype(np.uint16),
    ]
    for arr in cases:
        data = png_bytes(arr)
        a = decode_image(data, "x.png", backend="pyspng")
        b = decode_image(data, "x.png", backend="pillow")
        assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape == (16, 16, 1 if arr.ndim == 2 else 3)
        np.testing.assert_array_equal(a, b)
    # Pillow-written (compressed, filtered) files too
    for mode in ("L", "RGB"):
        img = Image.fromarray(cases[0 if mode == "L" else 1])
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=9)
        a = decode_image(buf.getvalue(), "y.png", backend="pyspng")
        np.testing.assert_array_equal(a, decode_image(buf.getvalue(), "y.png", backend="pillow"))
        np.testing.assert_array_equal(a.reshape(np.asarray(img).shape), np.asarray(img))


def test_rgb_and_grayscale_channels(tmp_path):
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    write_png(tmp_path / "rgb" / "a.png", rgb)
    write_png(tmp_path / "gray" / "a.png", np.full((8, 8), 40, dtype=np.uint8))
    ds_rgb = open_image_dataset(tmp_path / "rgb")
    ds_l = open_image_dataset(tmp_path / "gray")
    assert ds_rgb.num_channels == 3 and ds_rgb.image_shape == [3, 8, 8]
    assert ds_l.num_channels == 1 and ds_l.image_shape == [1, 8, 8]
    np.testing.assert_array_equal(ds_rgb[0][0][:, 0, 0], [10, 20, 30])
    assert (ds_l[0][0] == 40).all()


def test_jpeg_grayscale_and_rgb_mixed_with_png(tmp_path):
    rng = np.random.default_rng(4)
    for mode, sub in (("L", "l"), ("RGB", "rgb")):
        shape = (16, 16) if mode == "L" else (16, 16, 3)
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
        (tmp_path / sub).mkdir()
        Image.fromarray(arr).save(tmp_path / sub / "a.JPG", quality=90)
        write_png(tmp_path / sub / "b.png", arr)
        ds = open_image_dataset(tmp_path / sub)
        assert len(ds) == 2 and ds.num_channels == (1 if mode == "L" else 3)
        with Image.open(tmp_path / sub / "a.JPG") as im:
            np.testing.assert_array_equal(ds[0][0], chw(np.asarray(im)))
        np.testing.assert_array_equal(ds[1][0], chw(arr))


# ---------------------------------------------------------------------------------------------------
# Zip, order, mirroring, subsets, workers


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_equals_folder(tmp_path, compression):
    images = make_folder(tmp_path / "data", 7, channels=3)
    write_json(tmp_path / "data" / "dataset.json", {r: i % 2 for i, r in enumerate(sorted(images))})
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    zpath = zip_folder(tmp_path / "data", tmp_path / "data.zip", compression, reverse=True)
    folder = open_image_dataset(tmp_path / "data", use_labels=True, xflip=True)
    zipped = open_image_dataset(zpath, use_labels=True, xflip=True)
    assert zipped.name == "data" and len(zipped) == len(folder) == 14
    assert [zipped.relpath(i) for i in range(7)] == [folder.relpath(i) for i in range(7)] == sorted(images)
    fi, fl = all_items(folder)
    zi, zl = all_items(zipped)
    np.testing.assert_array_equal(fi, zi)
    np.testing.assert_array_equal(fl, zl)
    assert "ignored 1 non-image/hidden files (.txt: 1)" in zipped.describe()


def test_order_is_sorted_relative_paths(tmp_path):
    for rel in ["b.png", "a/z.png", "A.png", "a10.png", "a2.png", "a/b/c.png"]:
        write_png(tmp_path / rel, np.zeros((8, 8), dtype=np.uint8))
    ds = open_image_dataset(tmp_path)
    order = [ds.relpath(i) for i in range(len(ds))]
    assert order == ["A.png", "a/b/c.png", "a/z.png", "a10.png", "a2.png", "b.png"]


def test_hidden_and_macos_files_are_ignored(tmp_path):
    make_folder(tmp_path, 2)
    (tmp_path / "._img00.png").write_bytes(b"AppleDouble junk")
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "img00.png").write_bytes(b"junk")
    (tmp_path / ".cache").mkdir()
    write_png(tmp_path / ".cache" / "x.png", np.zeros((4, 4), dtype=np.uint8))
    ds = open_image_dataset(tmp_path)
    assert len(ds) == 2
    assert "ignored 3 non-image/hidden files" in ds.describe()


def test_xflip_doubles_and_mirrors(tmp_path):
    images = make_folder(tmp_path, 3)
    write_json(tmp_path / "dataset.json", {r: i for i, r in enumerate(sorted(images))})
    ds = open_image_dataset(tmp_path, use_labels=True, xflip=True)
    assert ds.xflip and len(ds) == 6 and ds.num_images == 3
    for i, rel in enumerate(sorted(images)):
        np.testing.assert_array_equal(ds[i][0], chw(images[rel]))
        flipped, label = ds[i + 3]
        np.testing.assert_array_equal(flipped, chw(images[rel][:, ::-1]))
        assert flipped.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(label, ds[i][1])
    np.testing.assert_array_equal(ds.raw_labels, [0, 1, 2, 0, 1, 2])
    assert ds.class_counts() == {0: 1, 1: 1, 2: 1}


def test_subset_is_deterministic_and_upstream_like(tmp_path):
    images = make_folder(tmp_path, 20)
    rels = sorted(images)
    a = open_image_dataset(tmp_path, max_size=5, random_seed=7)
    b = open_image_dataset(tmp_path, max_size=5, random_seed=7)
    c = open_image_dataset(tmp_path, max_size=5, random_seed=8)
    pick = lambda ds: [ds.relpath(i) for i in range(len(ds))]  # noqa: E731
    assert len(a) == 5 and pick(a) == pick(b)
    expected = [rels[i] for i in sorted(np.random.RandomState(7).permutation(20)[:5])]
    assert pick(a) == expected
    assert pick(c) == [rels[i] for i in sorted(np.random.RandomState(8).permutation(20)[:5])] != pick(a)
    np.testing.assert_array_equal(a[2][0], chw(images[expected[2]]))
    mirrored = open_image_dataset(tmp_path, max_size=5, random_seed=7, xflip=True)
    assert len(mirrored) == 10 and pick(mirrored)[:5] == expected
    assert "random subset of 20, seed 7" in a.describe()
    assert len(open_image_dataset(tmp_path, max_size=100)) == 20
    with pytest.raises(DatasetError, match="max_size"):
        open_image_dataset(tmp_path, max_size=0)


def test_dataloader_with_two_workers_over_zip(tmp_path):
    images = make_folder(tmp_path / "d", 8)
    write_json(tmp_path / "d" / "dataset.json", {r: i % 2 for i, r in enumerate(sorted(images))})
    ds = open_image_dataset(zip_folder(tmp_path / "d", tmp_path / "d.zip"), use_labels=True, xflip=True)
    ds[0]  # open the zip in the parent first: workers must not share its handle
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    imgs = torch.cat([x for x, _ in loader])
    labels = torch.cat([c for _, c in loader])
    ref_imgs, ref_labels = all_items(ds)
    assert imgs.dtype == torch.uint8 and imgs.shape == (16, 1, 8, 8)
    np.testing.assert_array_equal(imgs.numpy(), ref_imgs)
    np.testing.assert_array_equal(labels.numpy(), ref_labels)


def test_forked_process_does_not_use_the_parents_zip_handle(tmp_path):
    images = make_folder(tmp_path / "d", 2)
    ds = open_image_dataset(zip_folder(tmp_path / "d", tmp_path / "d.zip"))
    ds[0]
    parent_fd = ds._source._zip.fp.fileno()  # white box: the handle this process opened
    pid = os.fork()
    if pid == 0:  # child: lose the inherited descriptor; reading must reopen the archive
        code = 2
        try:
            os.close(parent_fd)
            code = 0 if np.array_equal(ds[1][0], chw(images["sub/img01.png"])) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    np.testing.assert_array_equal(ds[0][0], chw(images["img00.png"]))  # the parent's handle still works


def test_pickle_round_trip_after_reading(tmp_path):
    make_folder(tmp_path / "d", 3)
    ds = open_image_dataset(zip_folder(tmp_path / "d", tmp_path / "d.zip"))
    first = ds[1][0]
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[1][0], first)
    again = ImageDataset(**ds.init_kwargs)
    np.testing.assert_array_equal(again[1][0], first)
    json.dumps(ds.init_kwargs)


def test_index_errors(tmp_path):
    make_folder(tmp_path, 2)
    ds = open_image_dataset(tmp_path)
    np.testing.assert_array_equal(ds[-1][0], ds[1][0])
    with pytest.raises(IndexError):
        ds[2]
    assert len([item for item in ds]) == 2  # iteration stops at IndexError


# ---------------------------------------------------------------------------------------------------
# Errors


def test_mixed_sizes_name_both_files_and_shapes(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((8, 8), dtype=np.uint8))
    write_png(tmp_path / "b.png", np.zeros((8, 8), dtype=np.uint8))
    write_png(tmp_path / "c.png", np.zeros((16, 16), dtype=np.uint8))
    with pytest.raises(DatasetError) as err:
        open_image_dataset(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "a.png") in msg and "[1, 8, 8]" in msg
    assert str(tmp_path / "c.png") in msg and "[1, 16, 16]" in msg and "1 of 3" in msg


def test_mixed_channels_name_both_files(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((8, 8), dtype=np.uint8))
    write_png(tmp_path / "b.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(DatasetError) as err:
        open_image_dataset(tmp_path)
    msg = str(err.value)
    assert "a.png is [1, 8, 8]" in msg and "b.png is [3, 8, 8]" in msg


@pytest.mark.parametrize(
    "shape, pattern",
    [
        ((8, 16), r"a\.png: images must be square, this one is 16x8"),
        ((12, 12), r"a\.png: image size 12x12 is not a power of two"),
        ((2, 2), "not a power of two >= 4"),
    ],
)
def test_non_square_and_non_power_of_two(tmp_path, shape, pattern):
    write_png(tmp_path / "a.png", np.zeros(shape, dtype=np.uint8))
    with pytest.raises(DatasetError, match=pattern):
        open_image_dataset(tmp_path)


def test_unreadable_files_are_named_at_open(tmp_path):
    make_folder(tmp_path, 2)
    (tmp_path / "garbage.png").write_bytes(b"this is not an image at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes(png_bytes(np.zeros((8, 8), dtype=np.uint8))[:20])
    bad_crc = bytearray(png_bytes(np.zeros((8, 8), dtype=np.uint8)))
    bad_crc[20] ^= 1
    (tmp_path / "crc.png").write_bytes(bytes(bad_crc))
    (tmp_path / "bad.jpeg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 10)
    with pytest.raises(DatasetError) as err:
        open_image_dataset(tmp_path)
    msg = str(err.value)
    assert "5 of 7 images cannot be used" in msg
    assert f"{tmp_path / 'garbage.png'}: not a PNG or JPEG" in msg
    assert f"{tmp_path / 'empty.jpg'}: empty file" in msg
    assert f"{tmp_path / 'cut.png'}: corrupt or truncated PNG" in msg
    assert f"{tmp_path / 'crc.png'}: corrupt PNG (IHDR checksum" in msg
    assert f"{tmp_path / 'bad.jpeg'}: corrupt or unreadable JPEG" in msg


def test_corrupt_image_body_is_named_when_read(tmp_path):
    make_folder(tmp_path / "d", 2)
    (tmp_path / "d" / "img00.png").write_bytes(png_bytes(np.zeros((8, 8), dtype=np.uint8))[:45])
    ds = open_image_dataset(tmp_path / "d")  # headers are fine
    with pytest.raises(DatasetError, match=r"img00\.png: corrupt"):
        ds[0]
    ds[1]
    with pytest.raises(DatasetError, match=r"1 images cannot be decoded:\n.*img00\.png"):
        ds.verify()
    zpath = zip_folder(tmp_path / "d", tmp_path / "d.zip")
    with pytest.raises(DatasetError, match=rf"img00\.png in {str(zpath)}: corrupt"):
        open_image_dataset(zpath)[0]


@pytest.mark.parametrize(
    "data, what",
    [
        (pil_bytes("RGBA"), "8-bit RGBA PNG"),
        (pil_bytes("P"), "[0-9]+-bit palette \\(P\\) PNG"),
        (pil_bytes("LA"), "8-bit grayscale\\+alpha \\(LA\\) PNG"),
        (pil_bytes("1"), "1-bit grayscale PNG"),
        (pil_bytes("CMYK", "JPEG"), "CMYK JPEG"),
    ],
    ids=["RGBA", "P", "LA", "1", "CMYK"],
)
def test_unsupported_modes_say_what_is_supported(tmp_path, data, what):
    (tmp_path / "x.png").write_bytes(data)
    with pytest.raises(
        DatasetError, match=rf"x\.png: unsupported image mode {what}; supported: 8- or 16-bit grayscale"
    ):
        open_image_dataset(tmp_path)


def test_missing_labels_counted_and_listed(tmp_path):
    images = make_folder(tmp_path, 9)
    rels = sorted(images)
    write_json(tmp_path / "dataset.json", {rels[0]: 1, rels[1]: 0})
    open_image_dataset(tmp_path)  # fine without labels
    with pytest.raises(DatasetError) as err:
        open_image_dataset(tmp_path, use_labels=True)
    msg = str(err.value)
    assert str(tmp_path / "dataset.json") in msg and "7 of 9 images have no label" in msg
    assert all(r in msg for r in rels[2:7]) and "(2 more)" in msg and rels[7] not in msg


def test_labels_with_wrong_prefix_get_a_hint(tmp_path):
    images = make_folder(tmp_path, 2)
    write_json(tmp_path / "dataset.json", {f"images/{r}": 0 for r in images})
    with pytest.raises(
        DatasetError, match=r"2 of 2 images have no label.*2 labels name files that are not in the dataset"
    ):
        open_image_dataset(tmp_path, use_labels=True)


def test_labels_for_absent_files_are_an_error_naming_them_and_the_dataset(tmp_path):
    images = make_folder(tmp_path, 2)
    gone = [f"gone{i}.png" for i in range(7)]
    write_json(tmp_path / "dataset.json", {r: 0 for r in images} | {g: 1 for g in gone})
    with pytest.raises(DatasetError) as err:
        open_image_dataset(tmp_path, use_labels=True)
    msg = str(err.value)
    assert msg.startswith(
        f"{tmp_path / 'dataset.json'}: 7 labels name files that are not in the dataset {tmp_path}"
    )
    assert "gone0.png, gone1.png, gone2.png, gone3.png, gone4.png, ... (2 more)" in msg
    assert "gone5.png" not in msg and "have no label" not in msg
    assert "\n" not in msg  # one line for an `Error: ...` report
    open_image_dataset(tmp_path)  # labels not read without use_labels


def test_labels_for_ignored_files_say_they_are_not_used(tmp_path):
    images = make_folder(tmp_path, 2)
    (tmp_path / "scan.tif").write_bytes(b"II*\x00")
    (tmp_path / ".hidden.png").write_bytes(png_bytes(np.zeros((8, 8), dtype=np.uint8)))
    write_json(tmp_path / "dataset.json", {r: 0 for r in images} | {"scan.tif": 1, ".hidden.png": 1})
    with pytest.raises(
        DatasetError, match=r"2 labels name .*\(2 of them hidden or not PNG/JPEG, so not used\)"
    ):
        open_image_dataset(tmp_path, use_labels=True)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ('{"a.png": 1,\n "b.png": }', r"invalid JSON at line 2, column 11"),
        ("[1, 2]", "expected a JSON object"),
        ('{"labels": {"a.png": 1}}', '"labels" must be a list of \\[path, label\\] pairs or null'),
        ('{"labels": [["a.png", 1, 2]]}', '"labels" entry 0 must be a \\[path, label\\] pair'),
        ('{"labels": [[3, 1]]}', '"labels" entry 0 must be'),
        ('{"a.png": true}', "label for 'a.png' is a boolean"),
        ('{"a.png": 1.5}', "label for 'a.png' is 1.5; a single label must be a non-negative integer"),
        ('{"a.png": -1}', "class indices must be >= 0"),
        (
            '{"a.png": "normal"}',
            "label for 'a.png' must be an integer class index, a list of numbers or null",
        ),
        ('{"a.png": [1, "x"]}', "must be a list of numbers"),
        ('{"a.png": []}', "empty list"),
        ('{"a.png": [NaN]}', "NaN or infinity"),
        ('{"a.png": 1, "b.png": [0.5]}', "labels mix integer classes"),
        ('{"a.png": [1, 2], "b.png": [0.5]}', "vector labels differ in length: 'a.png' has 2, 'b.png' has 1"),
        ('{"labels": [["a.png", 0], ["a.png", 1]]}', "'a.png' is listed twice with different labels"),
        ('{"a.png": 2, "class_names": ["x", "y"]}', "label 2 for 'a.png' has no name"),
        ('{"a.png": 0, "class_names": "x"}', '"class_names" must be a list of strings'),
        ('{"a.png": 0, "class_names": ["x", "x"]}', "duplicates"),
        ('{"a.png": [0, 1], "class_names": ["x"]}', '"class_names" has 1 names but vector labels have 2'),
    ],
)
def test_malformed_dataset_json(tmp_path, text, pattern):
    write_png(tmp_path / "a.png", np.zeros((8, 8), dtype=np.uint8))
    write_png(tmp_path / "b.png", np.zeros((8, 8), dtype=np.uint8))
    (tmp_path / "dataset.json").write_text(text)
    with pytest.raises(DatasetError, match=pattern) as err:
        open_image_dataset(tmp_path, use_labels=True)
    assert str(err.value).startswith(str(tmp_path / "dataset.json"))


def test_parse_dataset_json_accepts_null_entries_and_integral_floats():
    info = parse_dataset_json(
        b'\xef\xbb\xbf{"labels": [["a.png", 1.0], ["b.png", null]], "class_names": ["n", "a"]}', "x"
    )
    assert info.labels == {"a.png": 1} and info.kind == "int" and info.format == "upstream"
    assert info.class_names == ["n", "a"]
    assert parse_dataset_json('{"a.png": [1, 2.5]}', "x").labels == {"a.png": (1.0, 2.5)}


def test_empty_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(
        DatasetError, match=rf"{tmp_path}: no PNG/JPEG images found.*1 other files ignored, e\.g\. notes\.txt"
    ):
        open_image_dataset(tmp_path)


def test_bad_paths(tmp_path):
    with pytest.raises(DatasetError, match=r"nope: no such folder or zip file"):
        open_image_dataset(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"file\.txt: expected a folder of images or a \.zip archive"):
        open_image_dataset(tmp_path / "file.txt")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetError, match=r"broken\.zip: not a readable zip archive"):
        open_image_dataset(tmp_path / "broken.zip")
